"""What a pseudo-label file's images and annotations must be for the student to train on them.

Each check returns the problem as text (None when fine); the caller knows where the item is
(file and array index, or shard and line) and raises the InputError. Checks that need another item
(the annotation's image, the category list) are separate so a streaming reader can run them once it
has both.
"""
from typing import Optional, Tuple

import pycocotools.mask as mask_util

from xpseudo.utils.json_values import is_finite_number as _is_number
from xpseudo.utils.json_values import is_integer as _is_int


def image_problem(image) -> Optional[str]:
    if not isinstance(image, dict):
        return f"must be an object, got {type(image).__name__}"
    for key in ("id", "file_name", "height", "width"):
        if key not in image:
            return f"lacks {key!r}"
    if not _is_int(image["id"]):
        return f"'id' must be an integer, got {image['id']!r}"
    if not isinstance(image["file_name"], str) or not image["file_name"]:
        return f"'file_name' must be a non-empty string, got {image['file_name']!r}"
    if not (_is_int(image["height"]) and _is_int(image["width"]) and image["height"] > 0 and image["width"] > 0):
        return f"'height' and 'width' must be positive integers, got {image['height']!r} x {image['width']!r}"
    return None


def annotation_problem(ann, allow_empty: bool = False) -> Tuple[Optional[str], Optional[Tuple[int, int]], int]:
    """The checks an annotation passes on its own: (problem, RLE size [h, w], mask area).

    The student decodes ``segmentation`` as an RLE with string counts, needs a 4-number ``bbox``,
    and detectron2 refuses ``ignore``; ``area``, when given, must be the mask's (within 1 pixel).
    An empty mask is a problem unless ``allow_empty`` (raw predictions kept for evaluation).
    """
    if not isinstance(ann, dict):
        return f"must be an object, got {type(ann).__name__}", None, 0
    for key in ("id", "image_id", "category_id"):
        if not _is_int(ann.get(key)):
            return f"{key!r} must be an integer, got {ann.get(key)!r}", None, 0
    rle = ann.get("segmentation")
    size = rle.get("size") if isinstance(rle, dict) else None
    if not (isinstance(rle, dict) and isinstance(rle.get("counts"), str) and isinstance(size, list) and len(size) == 2 and all(_is_int(s) and s > 0 for s in size)):
        return "segmentation must be an RLE with string counts and a [height, width] size", None, 0
    try:
        area = int(mask_util.area({"size": size, "counts": rle["counts"].encode()}))
    except Exception as e:  # pycocotools raises assorted errors on malformed counts
        return f"unreadable RLE counts ({e})", None, 0
    if "area" in ann and not _is_number(ann["area"]):
        return f"'area' must be a finite number, got {ann['area']!r}", None, 0
    if (area <= 0 and not allow_empty) or area > size[0] * size[1] or ("area" in ann and abs(area - ann["area"]) > 1):
        return f"RLE counts do not decode to a mask of area {ann.get('area')} inside the image", None, 0
    band = ann.get("uncertain_segmentation")
    if band is not None:
        if not (isinstance(band, dict) and isinstance(band.get("counts"), str) and band.get("size") == size):
            return f"'uncertain_segmentation' must be an RLE with string counts and the size {size} of its segmentation", None, 0
        try:
            mask_util.area({"size": size, "counts": band["counts"].encode()})
        except Exception as e:
            return f"unreadable 'uncertain_segmentation' counts ({e})", None, 0
    box = ann.get("bbox")
    if not (isinstance(box, list) and len(box) == 4 and all(_is_number(v) for v in box)):
        return f"'bbox' must be 4 finite numbers [x, y, width, height], got {box!r}", None, 0
    if ann.get("ignore", 0) != 0:
        return "'ignore' annotations are not supported by detectron2", None, 0
    return None, (size[0], size[1]), area


def size_mismatch(rle_size: Tuple[int, int], image: dict) -> Optional[str]:
    if tuple(rle_size) != (image["height"], image["width"]):
        return f"segmentation must be an RLE with string counts and size [{image['height']}, {image['width']}] of its image, got {list(rle_size)}"
    return None
