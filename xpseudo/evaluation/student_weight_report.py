"""tools/student_weight_report.py: a trained student's signals on every object of its pseudo-label
file, scored against the truth (``xpseudo.evaluation.weight_diagnostics``)."""
import os
from typing import Optional, Sequence

import numpy as np
from pycocotools import mask as mask_util

from xpseudo.data.split import OvisSplit
from xpseudo.utils.io import InputError, load_json

from .weight_diagnostics import format_auroc_table, right_objects, weight_auroc_table


def student_weight_report(config_file: str, opts: Sequence[str], pseudo_path: str, gt_path: str, split_path: str,
                          image_root: Optional[str] = None) -> dict:
    import torch
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.data import MetadataCatalog
    from detectron2.data import detection_utils as utils
    from detectron2.data import transforms as T
    from detectron2.modeling import build_model

    import xpseudo.data.builtin  # noqa: F401  registers the builtin datasets
    import xpseudo.modeling  # noqa: F401  registers the models
    from xpseudo.config import load_config
    from xpseudo.modeling.object_signals import SIGNALS, object_signals
    from xpseudo.modeling.vocabulary import dataset_vocabulary

    cfg = load_config(config_file, list(opts))
    if not cfg.MODEL.WEIGHTS or not os.path.isfile(cfg.MODEL.WEIGHTS):
        raise InputError(cfg.MODEL.WEIGHTS or "MODEL.WEIGHTS", "the report needs the trained student's weights file (MODEL.WEIGHTS)")
    pseudo = load_json(pseudo_path, "pseudo-label file")
    if not isinstance(pseudo, dict) or not isinstance(pseudo.get("annotations"), list) or not isinstance(pseudo.get("images"), list):
        raise InputError(pseudo_path, "expected a COCO instances file with 'images' and 'annotations' (a pseudo_labels.json)")
    provenance_path = os.path.join(os.path.dirname(os.path.abspath(pseudo_path)), "provenance.json")
    dataset = load_json(provenance_path, "provenance file").get("dataset") if os.path.exists(provenance_path) else None
    if image_root is None:
        if not dataset:
            raise InputError(pseudo_path, "no provenance.json beside it names the labeled dataset; give --image-root")
        image_root = MetadataCatalog.get(dataset).image_root
    split = OvisSplit.from_file(split_path)
    gt = load_json(gt_path, "ground truth")
    gt_images = {im["file_name"]: im for im in gt["images"]}
    gt_names = {c["id"]: c["name"] for c in gt["categories"]}
    gt_by_image = {}
    for a in gt["annotations"]:
        gt_by_image.setdefault(a["image_id"], []).append(a)
    pseudo_names = {c["id"]: c["name"] for c in pseudo.get("categories", [])}
    gt_ids = {name: i for i, name in gt_names.items()}

    model = build_model(cfg)
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    vocabulary = model.set_vocabulary(dataset_vocabulary(dataset) if dataset else list(pseudo_names.values()), "the pseudo labels' classes")
    resize = T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
    by_image = {}
    for a in pseudo["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    signals = {name: [] for name in (*SIGNALS, "teacher_confidence")}
    right, names = [], []
    for image in pseudo["images"]:
        objects = by_image.get(image["id"], [])
        truth = gt_images.get(image["file_name"])
        if not objects:
            continue
        if truth is None:
            raise InputError(gt_path, f"has no image {image['file_name']!r}, which {pseudo_path} labels")
        array = utils.read_image(os.path.join(image_root, image["file_name"]), format=cfg.INPUT.FORMAT)
        height, width = array.shape[:2]
        transform = resize.get_transform(array)
        resized = transform.apply_image(array)
        masks = np.stack([mask_util.decode(_rle(a["segmentation"], height, width)) for a in objects]).astype(bool)
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in objects)], dtype=np.float64)
        values = object_signals(
            model, torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1))),
            transform.apply_box(boxes), np.array([vocabulary.index(pseudo_names[a["category_id"]]) for a in objects]),
            np.stack([transform.apply_segmentation(m.astype(np.uint8)) for m in masks]).astype(bool))
        for name, v in values.items():
            signals[name].append(v)
        signals["teacher_confidence"].append(np.array([float(a.get("score", 1.0)) for a in objects]))
        as_gt = [dict(a, category_id=gt_ids.get(pseudo_names[a["category_id"]], -1)) for a in objects]
        right.append(right_objects(as_gt, gt_by_image.get(truth["id"], []), height, width))
        names += [pseudo_names[a["category_id"]] for a in objects]
    if not names:
        raise InputError(pseudo_path, "holds no pseudo objects to score")
    signals = {k: np.concatenate(v) for k, v in signals.items()}
    right = np.concatenate(right)
    names = np.array(names)
    splits = {"all": np.ones(len(names), dtype=bool), "base": np.isin(names, split.base), "novel": np.isin(names, split.novel)}
    table = weight_auroc_table(signals, right, splits)
    counts = {s: [int(right[m].sum()), int((~right[m]).sum())] for s, m in splits.items()}
    return {"auroc": table, "right_wrong": counts, "text": format_auroc_table(table, counts)}


def _rle(segmentation, height: int, width: int) -> dict:
    if isinstance(segmentation, list):
        return mask_util.merge(mask_util.frPyObjects(segmentation, height, width))
    if isinstance(segmentation.get("counts"), list):
        return mask_util.frPyObjects(segmentation, height, width)
    return segmentation
