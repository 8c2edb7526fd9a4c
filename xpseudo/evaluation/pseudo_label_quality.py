"""How good a pseudo-label file is, instance by instance: each pseudo instance matched to ground
truth of its class at an IoU threshold, COCO's way (higher score first, each ground-truth instance
taken once, a match to a crowd region neither right nor wrong), then precision and recall per
class, the confidences of right and wrong instances, and the images with the most errors.

Recall counts the ground truth of the images the pseudo-label file covers, so a file made for a
subset of the images is not charged for the rest. Needs no detectron2 (tools/pseudo_label_report.py
draws the figures).
"""
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
from pycocotools import mask as mask_util
from pycocotools.coco import COCO


@dataclass
class ImageErrors:
    image_id: int
    right: int = 0
    wrong: int = 0  # pseudo instances with no ground truth of their class at the threshold
    missed: int = 0  # ground-truth instances of the scored classes that no pseudo instance found

    @property
    def errors(self) -> int:
        return self.wrong + self.missed


@dataclass
class QualityReport:
    iou_threshold: float
    scores_right: np.ndarray
    scores_wrong: np.ndarray
    # per category id: {"pseudo", "right", "ground_truth", "precision", "recall"}
    per_class: Dict[int, Dict[str, float]]
    images: Dict[int, ImageErrors] = field(default_factory=dict)

    def worst_images(self, n: int) -> List[ImageErrors]:
        """The ``n`` images with the most wrong plus missed instances (ties: more missed first, then id)."""
        ranked = sorted(self.images.values(), key=lambda e: (-e.errors, -e.missed, e.image_id))
        return [e for e in ranked if e.errors > 0][:n]


def _regions(annotations: Sequence[dict], iou_type: str, image: dict):
    if iou_type == "bbox":
        return [a["bbox"] for a in annotations]
    rles = []
    for a in annotations:
        seg = a["segmentation"]
        if isinstance(seg, list):
            seg = mask_util.merge(mask_util.frPyObjects(seg, image["height"], image["width"]))
        elif isinstance(seg.get("counts"), list):
            seg = mask_util.frPyObjects(seg, *seg["size"])
        rles.append(seg)
    return rles


def match_image(detections: Sequence[dict], ground_truth: Sequence[dict], iou_type: str, image: dict, threshold: float):
    """For one image and one class: per detection (in the given order) "right", "wrong" or
    "ignored" (it matched a crowd region)."""
    order = sorted(range(len(detections)), key=lambda i: -detections[i]["score"])
    outcome = ["wrong"] * len(detections)
    if not ground_truth or not detections:
        return outcome
    crowd = [int(bool(g.get("iscrowd", 0))) for g in ground_truth]
    ious = np.asarray(mask_util.iou(_regions([detections[i] for i in order], iou_type, image),
                                    _regions(ground_truth, iou_type, image), crowd)).reshape(len(order), len(ground_truth))
    taken = np.zeros(len(ground_truth), dtype=bool)
    for row, i in enumerate(order):
        # best free non-crowd instance first; a crowd region can absorb any number of detections
        candidates = [(ious[row, g], g) for g in range(len(ground_truth)) if ious[row, g] >= threshold and (crowd[g] or not taken[g])]
        non_crowd = [c for c in candidates if not crowd[c[1]]]
        if non_crowd:
            _, g = max(non_crowd)
            taken[g] = True
            outcome[i] = "right"
        elif candidates:
            outcome[i] = "ignored"
    return outcome


def pseudo_label_quality(
    coco_gt: COCO,
    detections: Sequence[dict],
    image_ids: Optional[Sequence[int]] = None,
    iou_type: str = "segm",
    iou_threshold: float = 0.5,
    category_ids: Optional[Sequence[int]] = None,
) -> QualityReport:
    """Match ``detections`` (checked by ``check_detections``) to ``coco_gt``. ``image_ids``: the
    images the pseudo labels cover (default: those with a detection); ``category_ids``: the classes
    whose misses count (default: every ground-truth class)."""
    if image_ids is None:
        image_ids = sorted({d["image_id"] for d in detections})
    category_ids = sorted(coco_gt.getCatIds() if category_ids is None else category_ids)
    scored = set(category_ids)
    by_image: Dict[int, Dict[int, List[dict]]] = {}
    for d in detections:
        by_image.setdefault(d["image_id"], {}).setdefault(d["category_id"], []).append(d)
    counts = {c: dict(pseudo=0, right=0, ground_truth=0) for c in category_ids}
    right_scores, wrong_scores = [], []
    images: Dict[int, ImageErrors] = {}
    for image_id in image_ids:
        image = coco_gt.imgs[image_id]
        gt_by_class: Dict[int, List[dict]] = {}
        for g in coco_gt.imgToAnns.get(image_id, []):
            gt_by_class.setdefault(g["category_id"], []).append(g)
        errors = images[image_id] = ImageErrors(image_id)
        dets_by_class = by_image.get(image_id, {})
        for c in sorted(set(dets_by_class) | (set(gt_by_class) & scored)):
            dets, gts = dets_by_class.get(c, []), gt_by_class.get(c, [])
            outcome = match_image(dets, gts, iou_type, image, iou_threshold)
            n_gt, right = sum(1 for g in gts if not g.get("iscrowd", 0)), outcome.count("right")
            for d, o in zip(dets, outcome):
                if o == "right":
                    right_scores.append(d["score"])
                elif o == "wrong":
                    wrong_scores.append(d["score"])
            errors.right += right
            errors.wrong += outcome.count("wrong")
            if c in scored:
                errors.missed += n_gt - right
                counts[c]["pseudo"] += right + outcome.count("wrong")
                counts[c]["right"] += right
                counts[c]["ground_truth"] += n_gt
    per_class = {}
    for c, n in counts.items():
        per_class[c] = {**n, "precision": n["right"] / n["pseudo"] if n["pseudo"] else float("nan"),
                        "recall": n["right"] / n["ground_truth"] if n["ground_truth"] else float("nan")}
    return QualityReport(iou_threshold, np.asarray(right_scores, dtype=float), np.asarray(wrong_scores, dtype=float), per_class, images)
