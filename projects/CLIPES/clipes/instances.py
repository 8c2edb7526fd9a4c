"""Class maps -> instances: connected regions of each class's winning pixels, optionally replaced
by the class-agnostic teacher mask that overlaps them best (plain torch and OpenCV)."""
from dataclasses import dataclass
from typing import List

import cv2
import numpy as np
import torch


@dataclass
class Region:
    label: int  # index into the maps' classes
    mask: torch.Tensor  # H x W bool


def class_regions(maps: torch.Tensor, threshold: float, min_area: int) -> List[Region]:
    """``maps``: C x H x W in [0, 1]. A pixel is of class c where c's map is the largest and
    >= ``threshold``; every 8-connected region of a class with >= ``min_area`` pixels is one."""
    if len(maps) == 0:
        return []
    value, winner = maps.max(0)
    regions = []
    for label in range(len(maps)):
        pixels = ((winner == label) & (value >= threshold)).cpu().numpy().astype(np.uint8)
        count, components = cv2.connectedComponents(pixels, connectivity=8)
        for k in range(1, count):
            mask = components == k
            if mask.sum() >= min_area:
                regions.append(Region(label, torch.from_numpy(mask)))
    return regions


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """R x P IoU of R and P boolean H x W masks."""
    a, b = a.flatten(1).float(), b.flatten(1).float()
    inter = a @ b.t()
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    return inter / union.clamp(min=1)


def snap_to_teacher(regions: List[Region], teacher_masks: torch.Tensor, min_iou: float) -> List[Region]:
    """Each region replaced by the teacher mask (P x H x W bool) of highest IoU with it, when that
    IoU is >= ``min_iou`` (else dropped); a teacher mask is given to one region of a class only."""
    if not regions or len(teacher_masks) == 0:
        return []
    iou = mask_iou(torch.stack([r.mask for r in regions]), teacher_masks.to(torch.bool).cpu())
    best, index = iou.max(1)
    taken = {}
    for i in torch.argsort(best, descending=True).tolist():
        key = (regions[i].label, int(index[i]))
        if best[i] >= min_iou and key not in taken:
            taken[key] = i
    return [Region(regions[i].label, teacher_masks[p].to(torch.bool).cpu()) for (_, p), i in sorted(taken.items(), key=lambda kv: kv[1])]
