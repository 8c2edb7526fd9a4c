"""COCO AP reported by base/novel split from a single COCOeval pass.

COCOeval evaluates and accumulates each category independently, so the AP of a split is the mean
of the per-category precision entries of that split's categories: exactly what a second COCOeval
restricted with ``params.catIds`` would report, without running it again.
"""
import contextlib
import copy
import io
import math
import os
from typing import Dict, List, Optional, Sequence

import numpy as np
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from xpseudo.data.split import SPLITS, OvisSplit
from xpseudo.utils.io import InputError, load_json
from xpseudo.utils.json_values import is_integer as _is_int
from xpseudo.utils.json_values import finite_numbers, is_finite_number
from xpseudo.utils.rle import segmentation_problem

IOU_TYPES = ("segm", "bbox")
_FIELD_FOR = {"segm": "segmentation", "bbox": "bbox"}


def load_coco_gt(path: str) -> COCO:
    """pycocotools COCO for a ground-truth file, with errors naming the file."""
    data = load_json(path, "ground-truth file")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data, dict) or not isinstance(data.get(key), list):
            raise InputError(path, f"not a COCO instances file: no {key!r} list")
    check_ground_truth(data, path)
    for ann in data["annotations"]:
        ann.setdefault("iscrowd", 0)  # COCO's default; COCOeval reads the key from every object
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    coco.source_path = path  # so that a check needing the IoU type can still name the file
    return coco


def check_ground_truth(data: dict, path: str) -> None:
    """Every image has an integer id and its size, every annotation a known image and category, a
    finite box and a mask of its image's size: otherwise COCOeval would drop or misread them and
    change the AP without a word."""
    images, categories, annotation_ids = {}, set(), set()
    for i, image in enumerate(data["images"]):
        if not isinstance(image, dict) or not _is_int(image.get("id")):
            raise InputError(path, f"images[{i}] needs an integer 'id'")
        if not (_is_int(image.get("height")) and _is_int(image.get("width")) and image["height"] > 0 and image["width"] > 0):
            raise InputError(path, f"images[{i}] (id {image['id']}) needs positive integer 'height' and 'width'")
        if image["id"] in images:
            raise InputError(path, f"images[{i}]: image id {image['id']} is listed twice")
        images[image["id"]] = image
    for i, category in enumerate(data["categories"]):
        if not isinstance(category, dict) or not _is_int(category.get("id")) or not isinstance(category.get("name"), str):
            raise InputError(path, f"categories[{i}] needs an integer 'id' and a 'name'")
        if category["id"] in categories:
            raise InputError(path, f"categories[{i}]: category id {category['id']} is listed twice")
        categories.add(category["id"])
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            raise InputError(path, f"annotations[{i}] is not an object")
        if not _is_int(ann.get("id")):
            raise InputError(path, f"annotations[{i}] needs an integer 'id', got {ann.get('id')!r}")
        if ann["id"] in annotation_ids:  # pycocotools keeps one annotation per id: the others would vanish
            raise InputError(path, f"annotations[{i}]: annotation id {ann['id']} is listed twice")
        annotation_ids.add(ann["id"])
        image = images.get(ann.get("image_id")) if _is_int(ann.get("image_id")) else None
        if image is None:
            raise InputError(path, f"annotations[{i}]: image_id {ann.get('image_id')!r} is not among the images")
        if not _is_int(ann.get("category_id")) or ann["category_id"] not in categories:
            raise InputError(path, f"annotations[{i}]: category_id {ann.get('category_id')!r} is not among the categories")
        if not (is_finite_number(ann.get("area")) and ann["area"] >= 0):  # COCOeval sorts objects into area ranges by it
            raise InputError(path, f"annotations[{i}]: 'area' must be a non-negative number, got {ann.get('area')!r}")
        if ann.get("iscrowd", 0) not in (0, 1) or isinstance(ann.get("iscrowd"), float):
            raise InputError(path, f"annotations[{i}]: 'iscrowd' must be 0 or 1, got {ann.get('iscrowd')!r}")
        if "bbox" in ann and not finite_numbers(ann["bbox"], 4):
            raise InputError(path, f"annotations[{i}]: 'bbox' must be 4 finite numbers, got {ann['bbox']!r}")
        if "segmentation" in ann:
            problem = segmentation_problem(ann["segmentation"], image["height"], image["width"])
            if problem:
                raise InputError(path, f"annotations[{i}]: {problem}")


def load_detections(path: str, coco_gt: COCO, iou_type: str, gt_name: str = "the ground truth") -> List[dict]:
    """Detections from a COCO results list or a COCO instances file whose annotations have a score,
    checked against the ground truth: every image and category must exist there."""
    data = load_json(path, "detections file")
    if isinstance(data, dict) and isinstance(data.get("annotations"), list):
        detections = align_to_ground_truth(data, coco_gt, path, gt_name)
    elif isinstance(data, list):
        detections = data
    else:
        raise InputError(path, "expected a COCO results list or a COCO instances file with 'annotations'")
    return check_detections(detections, coco_gt, iou_type, path, gt_name)


def align_to_ground_truth(data: dict, coco_gt: COCO, path: str, gt_name: str) -> List[dict]:
    """The annotations of a COCO instances file of detections (tools/predict.py writes them), with
    image ids mapped to the ground truth's by file name and category ids by class name, where the
    file lists its images and categories: a folder labeled on its own numbers its images 1, 2, ..."""
    image_map, category_map = {}, {}
    gt_by_name = {im.get("file_name"): im["id"] for im in coco_gt.dataset["images"]}
    gt_by_base = {}
    for name, image_id in gt_by_name.items():
        gt_by_base.setdefault(os.path.basename(str(name)), []).append(image_id)
    for i, image in enumerate(data.get("images") or []):
        if not isinstance(image, dict) or "id" not in image or not isinstance(image.get("file_name"), str):
            raise InputError(path, f"images[{i}] needs 'id' and 'file_name'")
        name = image["file_name"]
        found = gt_by_name.get(name)
        if found is None and len(gt_by_base.get(os.path.basename(name), [])) == 1:
            found = gt_by_base[os.path.basename(name)][0]
        if found is None:
            raise InputError(path, f"images[{i}]: {name!r} is not an image of {gt_name}")
        image_map[image["id"]] = found
    gt_categories = {c["name"]: c["id"] for c in coco_gt.dataset["categories"]}
    for i, category in enumerate(data.get("categories") or []):
        if isinstance(category, dict) and category.get("name") in gt_categories:
            category_map[category.get("id")] = gt_categories[category["name"]]
    if not image_map and not category_map:
        return data["annotations"]
    aligned = []
    for det in data["annotations"]:
        if isinstance(det, dict):
            det = dict(det, image_id=image_map.get(det.get("image_id"), det.get("image_id")),
                       category_id=category_map.get(det.get("category_id"), det.get("category_id")))
        aligned.append(det)
    return aligned


def check_detections(detections, coco_gt: COCO, iou_type: str, source: str, gt_name: str) -> List[dict]:
    """Validated copies of ``detections`` ready for ``COCO.loadRes`` (RLE masks, one box field)."""
    field = _FIELD_FOR[iou_type]
    checked = []
    for i, det in enumerate(detections):
        if not isinstance(det, dict):
            raise InputError(source, f"detection {i} is not an object")
        missing = [k for k in ("image_id", "category_id", "score", field) if k not in det]
        if missing:
            raise InputError(source, f"detection {i} lacks {missing} (needed for {iou_type} evaluation)")
        image = coco_gt.imgs.get(det["image_id"]) if _is_int(det["image_id"]) else None
        if image is None:
            raise InputError(source, f"detection {i}: image_id {det['image_id']} is not an image of {gt_name}")
        if not _is_int(det["category_id"]) or det["category_id"] not in coco_gt.cats:
            raise InputError(source, f"detection {i}: category_id {det['category_id']} is not a category of {gt_name}")
        if not finite_numbers([det["score"]], 1):
            raise InputError(source, f"detection {i}: 'score' must be a finite number, got {det['score']!r}")
        if iou_type == "bbox" and not finite_numbers(det["bbox"], 4):
            raise InputError(source, f"detection {i}: 'bbox' must be 4 finite numbers, got {det['bbox']!r}")
        det = {k: det[k] for k in ("image_id", "category_id", "score", field)}
        if iou_type == "segm":
            det["segmentation"] = _as_rle(det["segmentation"], image["height"], image["width"], source, i)
        checked.append(det)
    return checked


def _as_rle(segmentation, height: int, width: int, source: str, i: int) -> dict:
    problem = segmentation_problem(segmentation, height, width)
    if problem:
        raise InputError(source, f"detection {i}: {problem}")
    if isinstance(segmentation, list):  # polygons
        return mask_util.merge(mask_util.frPyObjects(segmentation, height, width))
    if isinstance(segmentation["counts"], list):  # uncompressed RLE
        return mask_util.frPyObjects(segmentation, height, width)
    return segmentation


def run_cocoeval(coco_gt: COCO, detections: List[dict], iou_type: str, cat_ids: Sequence[int], img_ids=None) -> COCOeval:
    with contextlib.redirect_stdout(io.StringIO()):
        if detections:
            coco_dt = coco_gt.loadRes(copy.deepcopy(detections))
        else:  # loadRes cannot take an empty list; an empty result set scores 0 wherever there is GT
            coco_dt = COCO()
            coco_dt.dataset = {"images": coco_gt.dataset["images"], "categories": coco_gt.dataset["categories"], "annotations": []}
            coco_dt.createIndex()
        evaluator = COCOeval(coco_gt, coco_dt, iou_type)
        evaluator.params.catIds = sorted(cat_ids)
        if img_ids is not None:
            evaluator.params.imgIds = sorted(img_ids)
        evaluator.evaluate()
        evaluator.accumulate()
    return evaluator


def _mean_precision(precision: np.ndarray) -> float:
    valid = precision[precision > -1]
    return float(np.mean(valid)) * 100 if valid.size else float("nan")


def evaluate_by_split(
    coco_gt: COCO,
    detections: List[dict],
    split: OvisSplit,
    iou_type: str = "segm",
    cat_ids: Optional[Sequence[int]] = None,
    img_ids: Optional[Sequence[int]] = None,
) -> Dict[str, float]:
    """AP, AP50, AP75 (+ APs/m/l, per-class AP) over ``cat_ids`` (default: every GT category), and
    AP/AP50/AP75 per split, in percent. Keys of a split with no evaluated category are left out.
    ``img_ids`` restricts the images (default: all of the ground truth).

    ``detections`` must have passed ``check_detections``.
    """
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
    cat_ids = sorted(coco_gt.getCatIds() if cat_ids is None else cat_ids)
    if iou_type == "segm":
        unmasked = next((a for a in coco_gt.dataset["annotations"] if "segmentation" not in a), None)
        if unmasked is not None:
            raise InputError(getattr(coco_gt, "source_path", "the ground truth"),
                             f"annotation {unmasked.get('id')} has no 'segmentation': mask AP needs a mask for every object (evaluate boxes with iou_type bbox)")
    evaluator = run_cocoeval(coco_gt, detections, iou_type, cat_ids, img_ids)
    # precision: [IoU thresholds, recall points, categories, area ranges, max detections]
    precision = evaluator.eval["precision"][..., -1]  # the largest maxDets (100)
    iou_thresholds = evaluator.params.iouThrs
    at50 = int(np.argmin(np.abs(iou_thresholds - 0.5)))
    at75 = int(np.argmin(np.abs(iou_thresholds - 0.75)))

    def summary(k: Sequence[int], suffix: str) -> Dict[str, float]:
        p = precision[:, :, k, 0]
        return {
            "AP" + suffix: _mean_precision(p),
            "AP50" + suffix: _mean_precision(p[at50]),
            "AP75" + suffix: _mean_precision(p[at75]),
        }

    results = summary(list(range(len(cat_ids))), "")
    for area_index, area in enumerate(("s", "m", "l"), start=1):
        results["AP" + area] = _mean_precision(precision[:, :, :, area_index])
    name_to_k = {coco_gt.cats[c]["name"]: k for k, c in enumerate(cat_ids)}
    for which in SPLITS:
        ks = [name_to_k[n] for n in getattr(split, which) if n in name_to_k]
        if ks:
            results.update(summary(ks, "_" + which))
    for name, k in name_to_k.items():
        results["AP-" + name] = _mean_precision(precision[:, :, k, 0])
    return results


def evaluate_labels_on_their_images(labels_path: str, gt_path: str, split: OvisSplit, iou_type: str = "segm") -> Dict[str, float]:
    """AP / AP50 / AP75 (all, base, novel) of a pseudo-label file (COCO instances with scores)
    against ground truth, on the images the file lists (matched by file name): how right the labels
    are where they were made, not a recall over the ground truth's other images."""
    coco_gt = load_coco_gt(gt_path)
    detections = load_detections(labels_path, coco_gt, iou_type, gt_name=gt_path)
    labeled = load_json(labels_path, "pseudo-label file").get("images") or []
    gt_by_name = {im.get("file_name"): im["id"] for im in coco_gt.dataset["images"]}
    img_ids = sorted({gt_by_name[im["file_name"]] for im in labeled if im.get("file_name") in gt_by_name})
    results = evaluate_by_split(coco_gt, detections, split, iou_type, img_ids=img_ids or None)
    return {k: v for k, v in results.items() if not k.startswith("AP-")}


def format_split_table(results: Dict[str, float], iou_type: str) -> str:
    rows = [f"{iou_type:>6} | {'AP':>6} {'AP50':>6} {'AP75':>6}"]
    for which, suffix in (("all", ""), ("base", "_base"), ("novel", "_novel")):
        if "AP" + suffix in results:
            values = [results[m + suffix] for m in ("AP", "AP50", "AP75")]
            rows.append(f"{which:>6} | " + " ".join("   nan" if math.isnan(v) else f"{v:6.2f}" for v in values))
    return "\n".join(rows)
