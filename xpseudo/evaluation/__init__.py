"""Split-aware COCO evaluation. The core needs no detectron2; ``OVISEvaluator`` (detectron2's
``DatasetEvaluator`` interface) lives in ``xpseudo.evaluation.ovis_evaluator``."""
from .split_evaluation import (
    check_detections,
    evaluate_by_split,
    format_split_table,
    load_coco_gt,
    load_detections,
)

__all__ = ["check_detections", "evaluate_by_split", "format_split_table", "load_coco_gt", "load_detections"]
