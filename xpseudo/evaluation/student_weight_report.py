"""tools/student_weight_report.py: a trained student's signals on every object of its pseudo-label
file, scored against the truth (``xpseudo.evaluation.weight_diagnostics``)."""
import os
from typing import Optional, Sequence

import numpy as np
from pycocotools import mask as mask_util

from xpseudo.data.split import OvisSplit
from xpseudo.utils.io import InputError, load_json
from xpseudo.utils.json_values import finite_numbers

from .split_evaluation import load_coco_gt, load_detections
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
    coco_gt = load_coco_gt(gt_path)
    # checked and aligned to the ground truth (image ids by file name, category ids by class name)
    objects_of = {}
    for raw, det in zip(pseudo["annotations"], load_detections(pseudo_path, coco_gt, "segm", gt_name=gt_path)):
        if not finite_numbers(raw.get("bbox"), 4) or raw["bbox"][2] <= 0 or raw["bbox"][3] <= 0:
            raise InputError(pseudo_path, f"annotation {raw.get('id')}: 'bbox' must be [x, y, width, height] with a positive size, got {raw.get('bbox')!r}")
        objects_of.setdefault(det["image_id"], []).append(dict(det, bbox=raw["bbox"]))
    gt_by_name = {im["file_name"]: im["id"] for im in coco_gt.dataset["images"]}
    gt_by_base = {os.path.basename(name): i for name, i in gt_by_name.items()}
    class_name = {c["id"]: c["name"] for c in coco_gt.dataset["categories"]}
    model = build_model(cfg)
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    vocabulary = model.set_vocabulary(dataset_vocabulary(dataset) if dataset else list(class_name.values()), "the pseudo labels' classes")
    resize = T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
    signals = {name: [] for name in (*SIGNALS, "teacher_confidence")}
    right, names = [], []
    for image in pseudo["images"]:
        gt_id = gt_by_name.get(image["file_name"], gt_by_base.get(os.path.basename(image["file_name"])))
        objects = objects_of.get(gt_id, [])
        if not objects:
            continue
        array = utils.read_image(os.path.join(image_root, image["file_name"]), format=cfg.INPUT.FORMAT)
        height, width = array.shape[:2]
        transform = resize.get_transform(array)
        resized = transform.apply_image(array)
        masks = np.stack([mask_util.decode(a["segmentation"]) for a in objects]).astype(bool)
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in objects)], dtype=np.float64)
        values = object_signals(
            model, torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1))),
            transform.apply_box(boxes), np.array([vocabulary.index(class_name[a["category_id"]]) for a in objects]),
            np.stack([transform.apply_segmentation(m.astype(np.uint8)) for m in masks]).astype(bool))
        for name, v in values.items():
            signals[name].append(v)
        signals["teacher_confidence"].append(np.array([float(a.get("score", 1.0)) for a in objects]))
        right.append(right_objects(objects, coco_gt.imgToAnns.get(gt_id, []), height, width))
        names += [class_name[a["category_id"]] for a in objects]
    if not names:
        raise InputError(pseudo_path, "holds no pseudo objects to score")
    signals = {k: np.concatenate(v) for k, v in signals.items()}
    right = np.concatenate(right)
    names = np.array(names)
    signals["class"] = names
    splits = {"all": np.ones(len(names), dtype=bool), "base": np.isin(names, split.base), "novel": np.isin(names, split.novel)}
    table = weight_auroc_table(signals, right, splits)
    counts = {s: [int(right[m].sum()), int((~right[m]).sum())] for s, m in splits.items()}
    return {"auroc": table, "right_wrong": counts, "text": format_auroc_table(table, counts)}

