"""Open Images instance segmentation (V5+ / Challenge 2019 release) to COCO instances with RLE masks.

Inputs: the masks CSV (``MaskPath,ImageID,LabelName,BoxID,...``, one row per instance), the
class-description CSV (``MID,DisplayName``, no header), the mask PNGs (all unzipped into one
folder; 0 background, 255 object) and the images (``<ImageID>.jpg``). Masks are usually stored at
another resolution than their image, so each is resized to the image's size (nearest neighbour)
before it is encoded. Missing or unreadable mask files, and empty masks, are counted and skipped.
"""
import csv
import logging
import os
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import pycocotools.mask as mask_util
from tqdm import tqdm

from xpseudo.utils.io import InputError
from xpseudo.utils.parallel import ordered_map

from .image_files import UnreadableImage, header_size

logger = logging.getLogger(__name__)

MASK_COLUMNS = ("MaskPath", "ImageID", "LabelName", "BoxID")
COUNTS = ("rows", "other_classes", "missing_images", "unreadable_images", "masks_of_unusable_images",
          "missing_masks", "unreadable_masks", "empty_masks")


def read_class_descriptions(path: str) -> Dict[str, str]:
    """{MID: display name}. The file has no header (V6's boxable file has one; it is skipped)."""
    descriptions = {}
    try:
        with open(path, newline="", encoding="utf-8") as f:
            for line, row in enumerate(csv.reader(f), 1):
                if len(row) != 2:
                    raise InputError(path, f"line {line}: expected 'MID,DisplayName', found {len(row)} fields")
                if line == 1 and not row[0].startswith("/"):
                    continue  # a header row: MIDs look like /m/0bt9lr or /g/11bc5v7
                descriptions[row[0]] = row[1]
    except FileNotFoundError:
        raise InputError(path, "class-description CSV does not exist") from None
    return descriptions


def check_vocabulary(vocabulary: Sequence[dict], vocabulary_file: str, descriptions: Dict[str, str], descriptions_file: str) -> None:
    """Every class of our vocabulary must be in the release, under the same display name."""
    for i, entry in enumerate(vocabulary):
        if "mid" not in entry:
            raise InputError(vocabulary_file, f"categories[{i}] ({entry.get('name')!r}) lacks 'mid'")
        found = descriptions.get(entry["mid"])
        if found is None:
            raise InputError(descriptions_file, f"class {entry['mid']} ({entry['name']!r}) of {vocabulary_file} is not described")
        if found != entry["name"]:
            raise InputError(descriptions_file, f"class {entry['mid']} is named {found!r} here but {entry['name']!r} in {vocabulary_file}")


def read_mask_rows(path: str, mid_to_category: Dict[str, int]) -> Tuple[Dict[str, List[Tuple[str, int, str]]], int, int]:
    """({ImageID: [(MaskPath, category id, BoxID)]} in ImageID order, rows, rows of other classes)."""
    per_image: Dict[str, List[Tuple[str, int, str]]] = {}
    rows = other = 0
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in MASK_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise InputError(path, f"missing column(s) {missing}; expected a header with {', '.join(MASK_COLUMNS)}")
            for line, row in enumerate(reader, 2):
                rows += 1
                if not row["MaskPath"] or not row["ImageID"]:
                    raise InputError(path, f"line {line}: empty MaskPath or ImageID")
                category = mid_to_category.get(row["LabelName"])
                if category is None:
                    other += 1
                    continue
                per_image.setdefault(row["ImageID"], []).append((row["MaskPath"], category, row["BoxID"]))
    except FileNotFoundError:
        raise InputError(path, "masks CSV does not exist") from None
    return dict(sorted(per_image.items())), rows, other


def mask_annotation(mask_file: str, height: int, width: int) -> Tuple[str, Optional[dict]]:
    """("ok", segmentation/area/bbox) or (problem, None) for one mask PNG at the image's size."""
    if not os.path.isfile(mask_file):
        return "missing_masks", None
    mask = cv2.imread(mask_file, cv2.IMREAD_GRAYSCALE)
    if mask is None:
        return "unreadable_masks", None
    if mask.shape != (height, width):
        mask = cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)
    rle = mask_util.encode(np.asfortranarray(mask > 127, dtype=np.uint8))
    area = int(mask_util.area(rle))
    if area == 0:
        return "empty_masks", None
    bbox = [float(v) for v in mask_util.toBbox(rle)]
    return "ok", {"segmentation": {"size": [height, width], "counts": rle["counts"].decode("ascii")}, "area": area, "bbox": bbox}


def _convert_image(item):
    image_id, image_file, masks = item
    try:
        height, width = header_size(image_file)
    except FileNotFoundError:
        return image_id, "missing_images", None, []
    except UnreadableImage:
        return image_id, "unreadable_images", None, []
    converted = []
    for mask_file, category, box_id in masks:
        status, annotation = mask_annotation(mask_file, height, width)
        converted.append((status, mask_file, annotation and dict(annotation, category_id=category, oi_box_id=box_id)))
    return image_id, "ok", (height, width), converted


def convert_openimages(
    masks_csv: str, masks_dir: str, images_dir: str, categories: Sequence[dict], keep_category_ids: Iterable[int],
    workers: int = 0, image_extension: str = ".jpg",
) -> Tuple[dict, Dict[str, int]]:
    """(COCO instances dict, counts). ``categories`` (with ``mid``) are all listed in the output;
    only annotations of ``keep_category_ids`` are converted. Images get ids 1, 2, ... in ImageID
    order and keep their Open Images id as ``oi_image_id``; an image is written when at least one
    of its masks converts."""
    kept = set(keep_category_ids)
    mid_to_category = {c["mid"]: c["id"] for c in categories if c["id"] in kept}
    per_image, rows, other = read_mask_rows(masks_csv, mid_to_category)
    counts = dict.fromkeys(COUNTS, 0)
    counts.update(rows=rows, other_classes=other)
    items = [
        (oi_id, os.path.join(images_dir, oi_id + image_extension), [(os.path.join(masks_dir, m), c, b) for m, c, b in masks])
        for oi_id, masks in per_image.items()
    ]
    images, annotations = [], []
    for oi_id, status, size, converted in tqdm(ordered_map(_convert_image, items, workers), total=len(items), desc="converting", unit="img"):
        if status != "ok":
            counts[status] += 1
            counts["masks_of_unusable_images"] += len(per_image[oi_id])
            continue
        kept_annotations = []
        for problem, mask_file, annotation in converted:
            if problem != "ok":
                counts[problem] += 1
                if problem != "empty_masks":
                    logger.warning(f"{problem}: {mask_file}")
                continue
            kept_annotations.append(annotation)
        if not kept_annotations:
            continue
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": oi_id + image_extension, "height": size[0], "width": size[1], "oi_image_id": oi_id})
        for annotation in kept_annotations:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "iscrowd": 0, **annotation})
    counts.update(images=len(images), annotations=len(annotations))
    coco_categories = [{"id": c["id"], "name": c["name"], "mid": c["mid"], "synonyms": list(c.get("synonyms", []))} for c in categories]
    info = {"description": "Open Images instance masks in COCO format", "masks_csv": os.path.abspath(masks_csv), "counts": counts}
    return {"info": info, "images": images, "annotations": annotations, "categories": coco_categories}, counts
