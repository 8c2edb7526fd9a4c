"""Builtin datasets under $DETECTRON2_DATASETS (default ./datasets); layout in datasets/README.md.

Importing this module registers them. Category lists, synonyms and splits come from the JSON files
in datasets/metadata/, so registration reads no large annotation file.
"""
import os
from typing import Dict, Optional

from .metadata_files import metadata_file
from .ovis_datasets import register_ovis_dataset

def _family(prefix: str, train_images: str, val_images: str, annotations: str, files: Dict[str, str]) -> Dict[str, dict]:
    """The six datasets of one family; ``files`` names its train_base, train_captions, train_all and
    val JSON files inside ``annotations``."""
    path = {key: f"{annotations}/{name}" for key, name in files.items()}
    return {
        f"{prefix}_train_base": dict(image_root=train_images, instances_json=path["train_base"]),
        f"{prefix}_train_captions": dict(image_root=train_images, captions_json=path["train_captions"]),
        f"{prefix}_train_all": dict(image_root=train_images, instances_json=path["train_all"]),
        f"{prefix}_val": dict(image_root=val_images, instances_json=path["val"]),
        f"{prefix}_val_base": dict(image_root=val_images, instances_json=path["val"], restrict_to="base"),
        f"{prefix}_val_novel": dict(image_root=val_images, instances_json=path["val"], restrict_to="novel"),
    }


# family -> (split file, vocabulary file, caption vocabulary file, {name: dataset arguments relative to the root})
_BUILTIN = {
    "shapes": (
        "shapes_split.json",
        "shapes_vocabulary.json",
        None,
        _family("shapes", "shapes/images/train", "shapes/images/val", "shapes/annotations", dict(
            train_base="instances_train_base.json", train_captions="captions_train.json",
            train_all="instances_train_all.json", val="instances_val.json",
        )),
    ),
    "coco_ovis": (
        "coco_ovis_split.json",
        "coco_ovis_vocabulary.json",
        "coco_vocabulary.json",  # all 80 COCO classes: see datasets/README.md
        _family("coco_ovis", "coco/train2017", "coco/val2017", "coco/annotations/ovis", dict(
            train_base="instances_train2017_base.json", train_captions="captions_train2017.json",
            train_all="instances_train2017_all.json", val="instances_val2017.json",
        )),
    ),
}


def datasets_root() -> str:
    return os.path.expanduser(os.environ.get("DETECTRON2_DATASETS", "datasets"))


def register_all_builtin(root: Optional[str] = None) -> None:
    """Register every builtin dataset under ``root`` (default $DETECTRON2_DATASETS). Calling it again
    with another root re-registers them there."""
    root = datasets_root() if root is None else root
    for split_file, vocabulary_file, caption_vocabulary_file, datasets in _BUILTIN.values():
        for name, arguments in datasets.items():
            arguments = dict(arguments)
            for key in ("image_root", "instances_json", "captions_json"):
                if key in arguments:
                    arguments[key] = os.path.join(root, arguments[key])
            register_ovis_dataset(
                name,
                split_file=metadata_file(split_file),
                vocabulary_file=metadata_file(vocabulary_file),
                caption_vocabulary_file=metadata_file(caption_vocabulary_file) if caption_vocabulary_file else None,
                replace=True,
                **arguments,
            )


register_all_builtin()
