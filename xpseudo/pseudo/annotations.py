"""Pseudo masks -> COCO annotation dicts (RLE ``segmentation``, ``bbox``, ``area``, ``score``, ``word``,
optionally ``uncertain_segmentation``)."""
from typing import List, Optional, Sequence, Tuple

import numpy as np
import pycocotools.mask as mask_util


def encode_pseudo_annotations(
    image_id: int,
    masks: np.ndarray,
    category_ids: Sequence[int],
    scores: Sequence[float],
    words: Sequence[str],
    uncertain: Optional[np.ndarray] = None,
) -> Tuple[List[dict], int]:
    """COCO annotations (no ``id``; the merge numbers them) for N x H x W boolean masks.

    ``bbox`` and ``area`` are those of the mask, as in COCO ground truth. Empty masks are dropped
    (a box the mask head found nothing in); returns the annotations and how many were dropped.
    ``uncertain`` (N x H x W boolean, optional): each mask's uncertain pixels, stored as the RLE
    ``uncertain_segmentation`` (a thin band along the mask's edge: a few run lengths).
    """
    if len(masks) == 0:
        return [], 0
    rles = _encode(masks)
    bands = _encode(uncertain) if uncertain is not None else [None] * len(rles)
    areas = mask_util.area(rles)
    boxes = mask_util.toBbox(rles)
    annotations = []
    for rle, band, area, box, category_id, score, word in zip(rles, bands, areas, boxes, category_ids, scores, words):
        if area == 0:
            continue
        annotation = {
            "image_id": int(image_id),
            "category_id": int(category_id),
            "segmentation": _rle_dict(rle),
            "bbox": [round(float(v), 2) for v in box],
            "area": int(area),
            "iscrowd": 0,
            "score": round(float(score), 6),
            "word": word,
        }
        if band is not None:
            annotation["uncertain_segmentation"] = _rle_dict(band)
        annotations.append(annotation)
    return annotations, len(masks) - len(annotations)


def _encode(masks: np.ndarray) -> list:
    return mask_util.encode(np.asfortranarray(np.asarray(masks, dtype=np.uint8).transpose(1, 2, 0)))


def _rle_dict(rle: dict) -> dict:
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}
