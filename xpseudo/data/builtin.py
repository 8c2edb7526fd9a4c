"""Builtin datasets under $DETECTRON2_DATASETS (default ./datasets); layout in datasets/README.md.

Importing this module registers them. Category lists, synonyms and splits come from the JSON files
in datasets/metadata/, so registration reads no large annotation file.
"""
import os
from typing import Dict, Optional

from .lvis_ovis import register_lvis_ovis_dataset
from .metadata_files import metadata_file
from .ovis_datasets import register_ovis_dataset

# arguments holding paths relative to the datasets root, and ones naming datasets/metadata files
_ROOT_PATHS = ("image_root", "instances_json", "captions_json", "json_file")
_METADATA_FILES = ("split_file", "vocabulary_file", "caption_vocabulary_file")


def _family(prefix: str, train_images: str, val_images: str, annotations: str, files: Dict[str, str], **metadata) -> Dict[str, dict]:
    """The six datasets of a family whose captions and base masks share the train images;
    ``files`` names its train_base, train_captions, train_all and val JSON files in ``annotations``."""
    path = {key: f"{annotations}/{name}" for key, name in files.items()}
    return {
        f"{prefix}_train_base": dict(image_root=train_images, instances_json=path["train_base"], **metadata),
        f"{prefix}_train_captions": dict(image_root=train_images, captions_json=path["train_captions"], **metadata),
        f"{prefix}_train_all": dict(image_root=train_images, instances_json=path["train_all"], **metadata),
        **_val(prefix, val_images, path["val"], **metadata),
    }


def _val(prefix: str, images: str, instances_json: str, **metadata) -> Dict[str, dict]:
    """Generalized (all classes) and constrained (one split's classes) evaluation sets."""
    return {
        f"{prefix}_val": dict(image_root=images, instances_json=instances_json, **metadata),
        f"{prefix}_val_base": dict(image_root=images, instances_json=instances_json, restrict_to="base", **metadata),
        f"{prefix}_val_novel": dict(image_root=images, instances_json=instances_json, restrict_to="novel", **metadata),
    }


_OPENIMAGES = dict(split_file="openimages_ovis_split.json", vocabulary_file="openimages_ovis_vocabulary.json")
_LVIS = dict(split_file="lvis_v1_ovis_split.json", vocabulary_file="lvis_v1_vocabulary.json")

# name -> (register function, its arguments; paths relative to the root, metadata by file name)
_BUILTIN = {
    **{name: (register_ovis_dataset, arguments) for name, arguments in {
        **_family("shapes", "shapes/images/train", "shapes/images/val", "shapes/annotations", dict(
            train_base="instances_train_base.json", train_captions="captions_train.json",
            train_all="instances_train_all.json", val="instances_val.json",
        ), split_file="shapes_split.json", vocabulary_file="shapes_vocabulary.json"),
        # the same train images with weak labels of novel objects instead of captions
        **{f"shapes_train_{kind}": dict(image_root="shapes/images/train", instances_json=f"shapes/annotations/{kind}_train.json",
                                        split_file="shapes_split.json", vocabulary_file="shapes_vocabulary.json", weak_labels=kind)
           for kind in ("tags", "boxes", "points", "scribbles")},
        **_family("coco_ovis", "coco/train2017", "coco/val2017", "coco/annotations/ovis", dict(
            train_base="instances_train2017_base.json", train_captions="captions_train2017.json",
            train_all="instances_train2017_all.json", val="instances_val2017.json",
        ), split_file="coco_ovis_split.json", vocabulary_file="coco_ovis_vocabulary.json",
            caption_vocabulary_file="coco_vocabulary.json"),  # all 80 COCO classes: see datasets/README.md
        # Open Images masks (datasets/prepare_openimages.py) with Conceptual Captions
        # (datasets/prepare_conceptual_captions.py) as the captioned images
        "openimages_ovis_train_base": dict(
            image_root="openimages/train", instances_json="openimages/annotations/ovis/instances_train_base.json", **_OPENIMAGES),
        **_val("openimages_ovis", "openimages/validation", "openimages/annotations/ovis/instances_validation_all.json", **_OPENIMAGES),
        "cc_captions_train": dict(image_root="cc/images/train", captions_json="cc/annotations/captions_train.json", **_OPENIMAGES),
        # COCO captions matched against the LVIS vocabulary, for LVIS grounding and pseudo labels
        "lvis_ovis_train_captions": dict(
            image_root="coco/train2017", captions_json="coco/annotations/captions_train2017.json", **_LVIS),
    }.items()},
    "lvis_ovis_train_base": (register_lvis_ovis_dataset, dict(
        json_file="lvis/lvis_v1_train.json", image_root="coco", annotations="base", **_LVIS)),
    "lvis_ovis_val": (register_lvis_ovis_dataset, dict(json_file="lvis/lvis_v1_val.json", image_root="coco", **_LVIS)),
}


def datasets_root() -> str:
    return os.path.expanduser(os.environ.get("DETECTRON2_DATASETS", "datasets"))


def register_all_builtin(root: Optional[str] = None) -> None:
    """Register every builtin dataset under ``root`` (default $DETECTRON2_DATASETS). Calling it again
    with another root re-registers them there."""
    root = datasets_root() if root is None else root
    for name, (register, arguments) in _BUILTIN.items():
        arguments = dict(arguments)
        for key in _ROOT_PATHS:
            if key in arguments:
                arguments[key] = os.path.join(root, arguments[key])
        for key in _METADATA_FILES:
            if arguments.get(key):
                arguments[key] = metadata_file(arguments[key])
        register(name, replace=True, **arguments)


register_all_builtin()
