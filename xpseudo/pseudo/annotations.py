"""Pseudo masks -> COCO annotation dicts (RLE ``segmentation``, ``bbox``, ``area``, ``score``, ``word``)."""
from typing import List, Sequence, Tuple

import numpy as np
import pycocotools.mask as mask_util


def encode_pseudo_annotations(
    image_id: int,
    masks: np.ndarray,
    category_ids: Sequence[int],
    scores: Sequence[float],
    words: Sequence[str],
) -> Tuple[List[dict], int]:
    """COCO annotations (no ``id``; the merge numbers them) for N x H x W boolean masks.

    ``bbox`` and ``area`` are those of the mask, as in COCO ground truth. Empty masks are dropped
    (a box the mask head found nothing in); returns the annotations and how many were dropped.
    """
    if len(masks) == 0:
        return [], 0
    rles = mask_util.encode(np.asfortranarray(np.asarray(masks, dtype=np.uint8).transpose(1, 2, 0)))
    areas = mask_util.area(rles)
    boxes = mask_util.toBbox(rles)
    annotations = []
    for rle, area, box, category_id, score, word in zip(rles, areas, boxes, category_ids, scores, words):
        if area == 0:
            continue
        annotations.append(
            {
                "image_id": int(image_id),
                "category_id": int(category_id),
                "segmentation": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")},
                "bbox": [round(float(v), 2) for v in box],
                "area": int(area),
                "iscrowd": 0,
                "score": round(float(score), 6),
                "word": word,
            }
        )
    return annotations, len(masks) - len(annotations)
