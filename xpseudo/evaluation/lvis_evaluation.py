"""LVIS AP (AP, AP50, AP75, APs/m/l, APr/c/f) with the lvis package, without detectron2: for
detection or pseudo-label files checked by ``load_detections``."""
from typing import Dict, List

from .lvis_compat import patch_numpy_for_lvis

LVIS_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf")


def is_lvis(categories: List[dict]) -> bool:
    """LVIS files give every category a frequency group (r, c, f)."""
    return bool(categories) and all("frequency" in c for c in categories)


def evaluate_lvis(gt_path: str, detections: List[dict], iou_type: str, max_dets: int = 300) -> Dict[str, float]:
    """Metrics in percent, as detectron2's LVISEvaluator reports them; detections use the LVIS
    file's category and image ids."""
    from lvis import LVIS, LVISEval, LVISResults

    patch_numpy_for_lvis()
    gt = LVIS(gt_path)
    lvis_eval = LVISEval(gt, LVISResults(gt, [dict(d) for d in detections], max_dets=max_dets), iou_type)
    lvis_eval.run()
    results = lvis_eval.get_results()
    return {metric: float(results[metric]) * 100 for metric in LVIS_METRICS}
