"""The student's training data: ground truth plus a pseudo-label file, merged image by image.

An image in both gets both annotation lists (its unannotated novel objects are then covered by
pseudo masks instead of being taught as background); pseudo annotations carry ``pseudo: True``,
which ``PseudoAwareDatasetMapper`` turns into ``instances.gt_pseudo``. Images only the pseudo labels
have (Conceptual Captions next to Open Images) are marked ``pseudo_only`` and sampled with their
own repeat factor (``student_sampler``).
"""
import logging
import os
from typing import List, Optional, Sequence

import pycocotools.mask as mask_util
import torch
from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog, get_detection_dataset_dicts
from detectron2.data import detection_utils as utils
from detectron2.data.samplers import RepeatFactorTrainingSampler

from xpseudo.utils.io import InputError, load_json

from .ovis_datasets import register_ovis_dataset

logger = logging.getLogger(__name__)


def check_pseudo_label_file(path: str, image_root: str) -> None:
    """Refuse, before training starts, a pseudo-label file with a missing image, an annotation of
    an unknown image or category, or an RLE that does not fit its image."""
    data = load_json(path, "pseudo-label file")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key) if isinstance(data, dict) else None, list):
            raise InputError(path, f"not a COCO instances file: no {key!r} list")
    images = {}
    for i, image in enumerate(data["images"]):
        for key in ("id", "file_name", "height", "width"):
            if key not in image:
                raise InputError(path, f"images[{i}] lacks {key!r}")
        if not os.path.isfile(os.path.join(image_root, image["file_name"])):
            raise InputError(path, f"images[{i}] (id {image['id']}): image file {os.path.join(image_root, image['file_name'])} does not exist")
        images[image["id"]] = image
    categories = {c["id"] for c in data["categories"]}
    for i, ann in enumerate(data["annotations"]):
        where = f"annotations[{i}] (id {ann.get('id')})"
        image = images.get(ann.get("image_id"))
        if image is None:
            raise InputError(path, f"{where}: image_id {ann.get('image_id')} is not among the images")
        if ann.get("category_id") not in categories:
            raise InputError(path, f"{where}: category_id {ann.get('category_id')} is not among the categories")
        rle = ann.get("segmentation")
        if not isinstance(rle, dict) or not isinstance(rle.get("counts"), str) or list(rle.get("size", [])) != [image["height"], image["width"]]:
            raise InputError(path, f"{where}: segmentation must be an RLE with string counts and size [{image['height']}, {image['width']}] of its image")
        try:
            area = int(mask_util.area({"size": rle["size"], "counts": rle["counts"].encode()}))
        except Exception as e:  # pycocotools raises assorted errors on malformed counts
            raise InputError(path, f"{where}: unreadable RLE counts ({e})") from e
        if area <= 0 or area > image["height"] * image["width"] or ("area" in ann and abs(area - ann["area"]) > 1):
            raise InputError(path, f"{where}: RLE counts do not decode to a mask of area {ann.get('area')} inside the image")


def register_pseudo_labels(name: str, path: str, like_dataset: str) -> None:
    """Register the pseudo-label file as ``name`` with the classes, split and image folder of the
    dataset it labels (``like_dataset``), after checking it."""
    like = MetadataCatalog.get(like_dataset)
    check_pseudo_label_file(path, like.image_root)
    register_ovis_dataset(
        name, image_root=like.image_root, split_file=like.split_file, instances_json=path,
        vocabulary_file=like.get("vocabulary_file"), replace=True,
    )


def merge_pseudo_labels(gt_records: Sequence[dict], pseudo_records: Sequence[dict]) -> List[dict]:
    """Ground-truth records with the pseudo annotations of the same image (by file name) added,
    then the images only the pseudo labels have (``pseudo_only: True``). Pseudo annotations get
    ``pseudo: True``."""
    merged = {}
    for record in gt_records:
        merged[record["file_name"]] = {**record, "annotations": [dict(a, pseudo=False) for a in record.get("annotations", [])]}
    added = 0
    for record in pseudo_records:
        annotations = [dict(a, pseudo=True) for a in record.get("annotations", [])]
        if record["file_name"] in merged:
            merged[record["file_name"]]["annotations"] += annotations
        else:
            merged[record["file_name"]] = {**record, "annotations": annotations, "pseudo_only": True}
            added += 1
    logger.info(f"{len(gt_records)} ground-truth images, {len(pseudo_records)} pseudo-labeled; {added} images only pseudo-labeled")
    return list(merged.values())


def pseudo_labeled_dataset(cfg) -> str:
    """The captioned dataset XPM.PSEUDO_LABELS_FILE was made on (see XPM.PSEUDO_LABELED_DATASET)."""
    if cfg.XPM.PSEUDO_LABELED_DATASET:
        return cfg.XPM.PSEUDO_LABELED_DATASET
    provenance = os.path.join(os.path.dirname(os.path.abspath(cfg.XPM.PSEUDO_LABELS_FILE)), "provenance.json")
    if os.path.isfile(provenance):
        name = load_json(provenance, "provenance file").get("dataset")
        if name:
            if name not in DatasetCatalog.list():
                raise InputError(provenance, f"'dataset' {name!r} is not registered here; register it or set XPM.PSEUDO_LABELED_DATASET")
            return name
    return cfg.DATASETS.TRAIN[0]


def student_train_records(cfg) -> List[dict]:
    """DATASETS.TRAIN merged with XPM.PSEUDO_LABELS_FILE (registered as XPM.PSEUDO_DATASET)."""
    register_pseudo_labels(cfg.XPM.PSEUDO_DATASET, cfg.XPM.PSEUDO_LABELS_FILE, pseudo_labeled_dataset(cfg))
    gt = get_detection_dataset_dicts(list(cfg.DATASETS.TRAIN), filter_empty=False)
    pseudo = DatasetCatalog.get(cfg.XPM.PSEUDO_DATASET)
    return merge_pseudo_labels(gt, pseudo)


def student_repeat_factors(records: Sequence[dict], pseudo_factor: float, category_factors: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-image repeat factors: ``pseudo_factor`` for pseudo-only images (negative: ground-truth
    images / pseudo-only images, so each source is about half the samples), 1 for the others,
    times ``category_factors`` when given."""
    pseudo_only = torch.tensor([bool(r.get("pseudo_only", False)) for r in records])
    num_pseudo = int(pseudo_only.sum())
    if pseudo_factor < 0:
        pseudo_factor = (len(records) - num_pseudo) / num_pseudo if num_pseudo else 1.0
    factors = torch.where(pseudo_only, torch.tensor(float(pseudo_factor)), torch.tensor(1.0))
    if category_factors is not None:
        factors = factors * category_factors
    logger.info(f"{num_pseudo} pseudo-only images sampled x{pseudo_factor:.3g} against {len(records) - num_pseudo} with ground truth")
    return factors


def student_sampler(cfg, records: Sequence[dict]) -> Optional[RepeatFactorTrainingSampler]:
    """The sampler for the merged records, or None when detectron2's default (from the config)
    already samples them as asked."""
    category_factors = None
    if cfg.DATALOADER.SAMPLER_TRAIN == "RepeatFactorTrainingSampler":
        category_factors = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(records, cfg.DATALOADER.REPEAT_THRESHOLD)
    elif cfg.XPM.PSEUDO_REPEAT_FACTOR == 1.0:
        return None
    factors = student_repeat_factors(records, cfg.XPM.PSEUDO_REPEAT_FACTOR, category_factors)
    return RepeatFactorTrainingSampler(factors, seed=cfg.SEED if cfg.SEED >= 0 else None)


class PseudoAwareDatasetMapper(DatasetMapper):
    """DatasetMapper that keeps each annotation's ``pseudo`` flag as ``instances.gt_pseudo``."""

    def _transform_annotations(self, dataset_dict, transforms, image_shape):
        annotations = [
            utils.transform_instance_annotations(obj, transforms, image_shape)
            for obj in dataset_dict.pop("annotations")
            if obj.get("iscrowd", 0) == 0
        ]
        instances = utils.annotations_to_instances(annotations, image_shape, mask_format=self.instance_mask_format)
        instances.gt_pseudo = torch.tensor([bool(a.get("pseudo", False)) for a in annotations], dtype=torch.bool)
        if self.recompute_boxes:
            instances.gt_boxes = instances.gt_masks.get_bounding_boxes()
        dataset_dict["instances"] = utils.filter_empty_instances(instances)
