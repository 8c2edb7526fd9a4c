"""How well a per-object weight tells right pseudo objects from wrong ones: AUROC against the
truth (no detectron2; the student's signals come from ``xpseudo.modeling.object_signals``)."""
from typing import Dict, List, Mapping, Sequence

import numpy as np
from pycocotools import mask as mask_util
from scipy.stats import rankdata


def relative_to_class_mean(values: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Each value over the mean value of its class's objects: what a class-relative weight
    (``WEIGHTING *_relative``) gives once its running class means have settled. Within a class it
    ranks objects as the value does; across classes it no longer favours the classes the student
    already knows. A class whose mean is 0 gets 1 for each of its objects."""
    values, classes = np.asarray(values, dtype=np.float64), np.asarray(classes)
    out = np.ones_like(values)
    for c in np.unique(classes):
        mine = classes == c
        mean = values[mine].mean()
        if mean > 0:
            out[mine] = values[mine] / mean
    return out


# candidate weights: (name, how it is made from the signals, the pseudo label's own confidence and
# each object's class); larger must mean "more likely right" (so the loss enters negated)
CANDIDATES = (
    ("1 / mean sigma", lambda s: s["inverse_sigma"]),
    ("teacher confidence", lambda s: s["teacher_confidence"]),
    ("mask agreement", lambda s: s["mask_agreement"]),
    ("class probability", lambda s: s["class_probability"]),
    ("-mask loss", lambda s: -s["mask_loss"]),
    ("agreement x probability", lambda s: s["mask_agreement"] * s["class_probability"]),
    ("agreement x confidence", lambda s: s["mask_agreement"] * s["teacher_confidence"]),
    ("probability / class mean", lambda s: relative_to_class_mean(s["class_probability"], s["class"])),
    ("agreement x probability / class mean", lambda s: relative_to_class_mean(s["mask_agreement"] * s["class_probability"], s["class"])),
)


def auroc(scores: Sequence[float], positive: Sequence[bool]) -> float:
    """Area under the ROC curve: the chance that a random positive scores above a random negative
    (ties count a half); NaN without both classes."""
    scores, positive = np.asarray(scores, dtype=np.float64), np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)  # average ranks for ties
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def right_objects(pseudo: Sequence[dict], ground_truth: Sequence[dict], height: int, width: int, iou_threshold: float = 0.5) -> np.ndarray:
    """Per pseudo object of one image: whether its mask overlaps a ground-truth object of the same
    category by IoU >= ``iou_threshold`` (segmentations as COCO RLE or polygons)."""
    right = np.zeros(len(pseudo), dtype=bool)
    for category in {p["category_id"] for p in pseudo}:
        mine = [i for i, p in enumerate(pseudo) if p["category_id"] == category]
        theirs = [g for g in ground_truth if g["category_id"] == category]
        if not theirs:
            continue
        ious = mask_util.iou([_rle(pseudo[i]["segmentation"], height, width) for i in mine],
                             [_rle(g["segmentation"], height, width) for g in theirs], [0] * len(theirs))
        right[mine] = np.asarray(ious).reshape(len(mine), len(theirs)).max(1) >= iou_threshold
    return right


def _rle(segmentation, height: int, width: int) -> dict:
    if isinstance(segmentation, list):
        return mask_util.merge(mask_util.frPyObjects(segmentation, height, width))
    if isinstance(segmentation.get("counts"), list):
        return mask_util.frPyObjects(segmentation, height, width)
    return segmentation


def weight_auroc_table(signals: Mapping[str, np.ndarray], right: np.ndarray, splits: Mapping[str, np.ndarray]) -> Dict[str, Dict[str, float]]:
    """AUROC of every candidate weight (``CANDIDATES``), per split (name -> mask over objects)."""
    return {name: {split: auroc(make(signals)[mask], right[mask]) for split, mask in splits.items()} for name, make in CANDIDATES}


def format_auroc_table(table: Dict[str, Dict[str, float]], counts: Dict[str, List[int]]) -> str:
    """The table as text: one row per candidate, one column per split, and each split's right /
    wrong object counts."""
    splits = list(counts)
    lines = [f"{'weight':<38}" + "".join(f"{s:>10}" for s in splits)]
    for name, values in table.items():
        lines.append(f"{name:<38}" + "".join(f"{values[s]:>10.3f}" for s in splits))
    lines.append(f"{'objects right / wrong':<38}" + "".join(f"{f'{r}/{w}':>10}" for r, w in (counts[s] for s in splits)))
    return "\n".join(lines)
