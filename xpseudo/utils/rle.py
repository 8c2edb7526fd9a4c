"""Checking COCO compressed RLE masks before pycocotools sees them (no detectron2).

pycocotools trusts an RLE's ``counts``: a string that is no RLE, or runs that do not add up to its
``size``, decode into a wrong mask without an error, or make COCOeval run for minutes. The check
walks the string as pycocotools' decoder does (5-bit groups, a continuation bit, sign-extension,
runs after the second stored as differences) and asks for runs that cover exactly the mask.
"""
from typing import List, Optional, Sequence

from xpseudo.utils.json_values import finite_numbers

_FIRST, _LAST = 48, 48 + 63  # the characters the encoder writes


def rle_runs(counts: str) -> Optional[List[int]]:
    """The run lengths of a compressed RLE string, or None when it is not one."""
    runs: List[int] = []
    position, length = 0, len(counts)
    while position < length:
        value, shift, more = 0, 0, True
        while more:
            if position >= length:
                return None  # the last group promised more
            code = ord(counts[position])
            if not _FIRST <= code <= _LAST:
                return None
            code -= _FIRST
            value |= (code & 0x1F) << shift
            more = bool(code & 0x20)
            position += 1
            shift += 5
            if not more and code & 0x10:
                value |= -1 << shift
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


def rle_problem(rle, size: Optional[Sequence[int]] = None) -> Optional[str]:
    """Why ``rle`` is no valid compressed RLE (of ``size`` [height, width], when given), or None."""
    if not isinstance(rle, dict) or not isinstance(rle.get("counts"), str):
        return "segmentation must be an RLE with string counts"
    shape = rle.get("size")
    if not (isinstance(shape, list) and len(shape) == 2 and all(type(v) is int and v > 0 for v in shape)):
        return f"RLE 'size' must be [height, width], got {shape!r}"
    if size is not None and list(shape) != list(size):
        return f"RLE size {shape} is not the image's [height, width] {list(size)}"
    runs = rle_runs(rle["counts"])
    if runs is None:
        return "RLE counts are not a compressed RLE string"
    if any(r < 0 for r in runs) or sum(runs) != shape[0] * shape[1]:
        return f"RLE counts do not cover the {shape[0]}x{shape[1]} mask exactly"
    return None


def segmentation_problem(segmentation, height: int, width: int) -> Optional[str]:
    """Why a COCO ``segmentation`` (polygons, compressed or uncompressed RLE) is no mask of
    ``height`` x ``width``, or None: pycocotools would turn it into a wrong mask or a slow COCOeval."""
    if isinstance(segmentation, dict):
        counts = segmentation.get("counts")
        if isinstance(counts, list):  # uncompressed RLE
            size = segmentation.get("size")
            if size != [height, width]:
                return f"RLE size {size} is not the image's [height, width] [{height}, {width}]"
            if not (finite_numbers(counts) and all(type(c) is int and c >= 0 for c in counts)) or sum(counts) != height * width:
                return f"uncompressed RLE counts must be non-negative integers adding up to {height} x {width} pixels"
            return None
        return rle_problem(segmentation, [height, width])
    if isinstance(segmentation, list):
        for polygon in segmentation:
            if not finite_numbers(polygon) or len(polygon) < 6 or len(polygon) % 2:
                return "a polygon must be at least 3 [x, y] points of finite numbers"
        if not segmentation:
            return "segmentation lists no polygon"
        return None
    return f"segmentation must be polygons or an RLE, got {type(segmentation).__name__}"
