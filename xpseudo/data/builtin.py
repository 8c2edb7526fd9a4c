"""Builtin datasets under $DETECTRON2_DATASETS (default ./datasets); layout in datasets/README.md.

Importing this module registers them. Category lists, synonyms and splits come from the JSON files
in datasets/metadata/, so registration reads no large annotation file.
"""
import os
from typing import Optional

from .metadata_files import metadata_file
from .ovis_datasets import register_ovis_dataset

# family -> (split file, vocabulary file, {name: dataset arguments relative to the root})
_BUILTIN = {
    "shapes": (
        "shapes_split.json",
        "shapes_vocabulary.json",
        {
            "shapes_train_base": dict(image_root="shapes/images/train", instances_json="shapes/annotations/instances_train_base.json"),
            "shapes_train_captions": dict(image_root="shapes/images/train", captions_json="shapes/annotations/captions_train.json"),
            "shapes_train_all": dict(image_root="shapes/images/train", instances_json="shapes/annotations/instances_train_all.json"),
            "shapes_val": dict(image_root="shapes/images/val", instances_json="shapes/annotations/instances_val.json"),
            "shapes_val_base": dict(image_root="shapes/images/val", instances_json="shapes/annotations/instances_val.json", restrict_to="base"),
            "shapes_val_novel": dict(image_root="shapes/images/val", instances_json="shapes/annotations/instances_val.json", restrict_to="novel"),
        },
    ),
    "coco_ovis": (
        "coco_ovis_split.json",
        "coco_ovis_vocabulary.json",
        {
            "coco_ovis_train_base": dict(image_root="coco/train2017", instances_json="coco/annotations/ovis/instances_train2017_base.json"),
            "coco_ovis_train_captions": dict(image_root="coco/train2017", captions_json="coco/annotations/ovis/captions_train2017.json"),
            "coco_ovis_train_all": dict(image_root="coco/train2017", instances_json="coco/annotations/ovis/instances_train2017_all.json"),
            "coco_ovis_val": dict(image_root="coco/val2017", instances_json="coco/annotations/ovis/instances_val2017.json"),
            "coco_ovis_val_base": dict(image_root="coco/val2017", instances_json="coco/annotations/ovis/instances_val2017.json", restrict_to="base"),
            "coco_ovis_val_novel": dict(image_root="coco/val2017", instances_json="coco/annotations/ovis/instances_val2017.json", restrict_to="novel"),
        },
    ),
}


def datasets_root() -> str:
    return os.path.expanduser(os.environ.get("DETECTRON2_DATASETS", "datasets"))


def register_all_builtin(root: Optional[str] = None) -> None:
    """Register every builtin dataset under ``root`` (default $DETECTRON2_DATASETS). Calling it again
    with another root re-registers them there."""
    root = datasets_root() if root is None else root
    for split_file, vocabulary_file, datasets in _BUILTIN.values():
        for name, arguments in datasets.items():
            arguments = dict(arguments)
            for key in ("image_root", "instances_json", "captions_json"):
                if key in arguments:
                    arguments[key] = os.path.join(root, arguments[key])
            register_ovis_dataset(
                name,
                split_file=metadata_file(split_file),
                vocabulary_file=metadata_file(vocabulary_file),
                replace=True,
                **arguments,
            )


register_all_builtin()
