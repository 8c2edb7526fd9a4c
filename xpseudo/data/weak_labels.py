"""Weak-label files: check them before the labeler reads them, and turn them into dataset records (no detectron2).

A weak-label dataset is a COCO-style file whose labels say less than a mask:
- "tags": class names per image, as Detic stores image labels: ``pos_category_ids`` on each image;
- "boxes": annotations with ``bbox`` and ``category_id`` and no ``segmentation``;
- "points": annotations with ``category_id`` and clicks as detectron2's PointSup project stores them:
  ``point_coords`` ([[x, y], ...], pixel indices) and ``point_labels`` (1 inside the object, 0 not);
- "scribbles": annotations with ``category_id`` and ``scribble``, one stroke drawn on the object as a
  polyline of two or more [x, y] vertices in image coordinates (pixel (i, j) spans [i, i + 1)).
Each bad entry is an error naming the file and the entry, found before any pseudo label is written;
detectron2's COCO loader would silently keep the last of two images with one id and pass a box that
leaves the image to the teacher.
"""
import math
import os
from typing import Dict, Iterable, List

from xpseudo.utils.io import InputError, load_json
from xpseudo.utils.json_values import is_finite_number, is_integer

from .captions import checked_file_name

WEAK_LABEL_KINDS = ("tags", "boxes", "points", "scribbles")
# a box or point may overhang the image by rounding, not more (pixels)
BOX_TOLERANCE = 1.0
_ANNOTATION_KEYS = {"boxes": ("image_id", "category_id", "bbox"), "points": ("image_id", "category_id", "point_coords", "point_labels"),
                    "scribbles": ("image_id", "category_id", "scribble")}


def check_weak_label_file(path: str, kind: str, category_ids: Iterable[int]) -> dict:
    """Load and check ``path`` holding weak labels of ``kind``; returns the parsed file."""
    if kind not in WEAK_LABEL_KINDS:
        raise ValueError(f"unknown weak-label kind {kind!r}; known: {WEAK_LABEL_KINDS}")
    data = load_json(path, "weak-label file")
    required = ("images",) if kind == "tags" else ("images", "annotations")
    for key in required:
        if not isinstance(data, dict) or not isinstance(data.get(key), list):
            raise InputError(path, f"not a COCO-style file: no {key!r} list")
    known = set(category_ids)
    images = {}
    for i, image in enumerate(data["images"]):
        missing = [k for k in ("id", "height", "width") if not isinstance(image, dict) or k not in image]
        if missing:
            raise InputError(path, f"images[{i}] lacks {missing}")
        image["file_name"] = checked_file_name(path, image, i)
        if not is_integer(image["id"]):
            raise InputError(path, f"images[{i}]: 'id' must be an integer, got {image['id']!r}")
        if not all(is_integer(image[k]) and image[k] > 0 for k in ("height", "width")):
            raise InputError(path, f"images[{i}] (id {image['id']}): 'height' and 'width' must be positive integers, "
                                   f"got {image['height']!r} x {image['width']!r}")
        if image["id"] in images:
            raise InputError(path, f"images[{i}]: image id {image['id']} is listed twice")
        images[image["id"]] = image
        if kind == "tags":
            tags = image.setdefault("pos_category_ids", [])  # an image without tags names no class
            if not isinstance(tags, list) or not all(is_integer(t) for t in tags):
                raise InputError(path, f"images[{i}] (id {image['id']}): pos_category_ids must be a list of category ids, got {tags!r}")
            unknown = [t for t in tags if t not in known]
            if unknown:
                raise InputError(path, f"images[{i}] (id {image['id']}): pos_category_ids {unknown} are not classes of the dataset")
    if kind == "tags":
        return data
    for i, ann in enumerate(data["annotations"]):
        where = f"annotations[{i}]" + (f" (id {ann['id']})" if isinstance(ann, dict) and "id" in ann else "")
        missing = [k for k in _ANNOTATION_KEYS[kind] if not isinstance(ann, dict) or k not in ann]
        if missing:
            raise InputError(path, f"{where} lacks {missing}")
        image = images.get(ann["image_id"]) if is_integer(ann["image_id"]) else None
        if image is None:
            raise InputError(path, f"{where}: image_id {ann['image_id']} is not among the images")
        if not is_integer(ann["category_id"]) or ann["category_id"] not in known:
            raise InputError(path, f"{where}: category_id {ann['category_id']} is not a class of the dataset")
        if kind == "boxes":
            _check_box(path, where, ann["bbox"], image)
        elif kind == "points":
            _check_points(path, where, ann["point_coords"], ann["point_labels"], image)
        else:
            _check_scribble(path, where, ann["scribble"], image)
    return data


def _outside(x: float, y: float, image: dict) -> bool:
    t = BOX_TOLERANCE
    return x < -t or y < -t or x > image["width"] + t or y > image["height"] + t


def _check_box(path: str, where: str, box, image: dict) -> None:
    if not (isinstance(box, list) and len(box) == 4 and all(is_finite_number(v) for v in box)):
        raise InputError(path, f"{where}: bbox must be [x, y, width, height] of finite numbers, got {box!r}")
    x, y, w, h = box
    if w <= 0 or h <= 0:
        raise InputError(path, f"{where}: bbox {box} is empty")
    if _outside(x, y, image) or _outside(x + w, y + h, image):
        raise InputError(path, f"{where}: bbox {box} leaves the {image['width']}x{image['height']} image {image['id']}")


def _check_points(path: str, where: str, coords, labels, image: dict) -> None:
    if not (isinstance(coords, list) and all(isinstance(p, list) and len(p) == 2 and all(is_finite_number(v) for v in p) for p in coords)):
        raise InputError(path, f"{where}: point_coords must be a list of [x, y] of finite numbers, got {coords!r}")
    if not (isinstance(labels, list) and len(labels) == len(coords) and all(v in (0, 1) for v in labels)):
        raise InputError(path, f"{where}: point_labels must be one 0 or 1 per point ({len(coords)}), got {labels!r}")
    for x, y in coords:
        if _outside(x, y, image):
            raise InputError(path, f"{where}: point [{x}, {y}] lies outside the {image['width']}x{image['height']} image {image['id']}")


def _check_scribble(path: str, where: str, vertices, image: dict) -> None:
    if not (isinstance(vertices, list) and len(vertices) >= 2
            and all(isinstance(p, list) and len(p) == 2 and all(is_finite_number(v) for v in p) for p in vertices)):
        raise InputError(path, f"{where}: scribble must be a polyline of two or more [x, y] of finite numbers, got {vertices!r}")
    for x, y in vertices:
        if _outside(x, y, image):
            raise InputError(path, f"{where}: scribble vertex [{x}, {y}] lies outside the {image['width']}x{image['height']} image {image['id']}")


def weak_label_records(data: dict, kind: str, image_root: str, id_map: Dict[int, int]) -> List[dict]:
    """Dataset records of a checked weak-label file, in its image order: ``tags`` (contiguous class
    ids, first mention kept) or ``annotations`` with contiguous ``category_id`` and ``bbox`` (XYWH)
    or ``point_coords``/``point_labels`` or ``scribble``."""
    records, by_id = [], {}
    for image in data["images"]:
        record = {"file_name": os.path.join(image_root, image["file_name"]), "height": image["height"], "width": image["width"],
                  "image_id": image["id"]}
        if kind == "tags":
            record["tags"] = list(dict.fromkeys(id_map[t] for t in image["pos_category_ids"]))
        else:
            record["annotations"] = []
        records.append(record)
        by_id[image["id"]] = record
    if kind != "tags":
        fields = [k for k in _ANNOTATION_KEYS[kind] if k not in ("image_id", "category_id")]
        for ann in data["annotations"]:
            by_id[ann["image_id"]]["annotations"].append({"category_id": id_map[ann["category_id"]], **{k: ann[k] for k in fields}})
    return records
