"""Checks of a weak-label file before the labeler reads it (no detectron2).

A weak-label dataset is a COCO instances file whose annotations say less than a mask: "boxes" =
``bbox`` and ``category_id`` only. Each bad entry is an error naming the file and the entry, found
before any pseudo label is written; detectron2's COCO loader would silently keep the last of two
images with one id and pass a box that leaves the image to the teacher.
"""
from typing import Iterable

from xpseudo.utils.io import InputError, load_json

# a box may overhang the image by rounding, not more (pixels)
BOX_TOLERANCE = 1.0


def check_weak_label_file(path: str, kind: str, category_ids: Iterable[int]) -> dict:
    """Load and check ``path`` holding weak labels of ``kind``; returns the parsed file."""
    if kind != "boxes":
        raise ValueError(f"unknown weak-label kind {kind!r}")
    data = load_json(path, "weak-label file")
    for key in ("images", "annotations"):
        if not isinstance(data, dict) or not isinstance(data.get(key), list):
            raise InputError(path, f"not a COCO instances file: no {key!r} list")
    images = {}
    for i, image in enumerate(data["images"]):
        missing = [k for k in ("id", "height", "width") if not isinstance(image, dict) or k not in image]
        if missing:
            raise InputError(path, f"images[{i}] lacks {missing}")
        if image["id"] in images:
            raise InputError(path, f"images[{i}]: image id {image['id']} is listed twice")
        images[image["id"]] = image
    known = set(category_ids)
    for i, ann in enumerate(data["annotations"]):
        where = f"annotations[{i}]" + (f" (id {ann['id']})" if isinstance(ann, dict) and "id" in ann else "")
        missing = [k for k in ("image_id", "category_id", "bbox") if not isinstance(ann, dict) or k not in ann]
        if missing:
            raise InputError(path, f"{where} lacks {missing}")
        image = images.get(ann["image_id"])
        if image is None:
            raise InputError(path, f"{where}: image_id {ann['image_id']} is not among the images")
        if ann["category_id"] not in known:
            raise InputError(path, f"{where}: category_id {ann['category_id']} is not a class of the dataset")
        box = ann["bbox"]
        if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
            raise InputError(path, f"{where}: bbox must be [x, y, width, height], got {box!r}")
        x, y, w, h = box
        if w <= 0 or h <= 0:
            raise InputError(path, f"{where}: bbox {box} is empty")
        t = BOX_TOLERANCE
        if x < -t or y < -t or x + w > image["width"] + t or y + h > image["height"] + t:
            raise InputError(path, f"{where}: bbox {box} leaves the {image['width']}x{image['height']} image {ann['image_id']}")
    return data
