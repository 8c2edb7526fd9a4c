"""Register open-vocabulary LVIS v1: train on frequent + common classes, evaluate APr on rare.

LVIS files keep their own format (polygons, ``coco_url`` naming the COCO image, federated
negative/not-exhaustive labels) and are read by detectron2's ``load_lvis_json``; evaluation is
detectron2's LVISEvaluator (the lvis package: AP, APr, APc, APf).
"""
import os
from typing import Dict, List

from detectron2.data.datasets.lvis import load_lvis_json

from xpseudo.text.vocabulary import Vocabulary
from xpseudo.utils.io import InputError

from .ovis_datasets import class_metadata, register_with_metadata
from .split import OvisSplit

ANNOTATIONS = ("base", "all")


def register_lvis_ovis_dataset(
    name: str, *, json_file: str, image_root: str, split_file: str, vocabulary_file: str,
    annotations: str = "all", replace: bool = False,
):
    """Register an LVIS v1 file as ``name`` with all of the vocabulary's classes.

    Args:
        image_root: the COCO folder holding train2017/ and val2017/ (LVIS names images by coco_url).
        vocabulary_file: the LVIS categories with synonyms (datasets/metadata/lvis_v1_vocabulary.json).
        annotations: "base" keeps the base (frequent + common) classes' annotations only, the
            training set of the open-vocabulary setting; "all" keeps every annotation.
    """
    if annotations not in ANNOTATIONS:
        raise ValueError(f"dataset {name!r}: annotations must be one of {ANNOTATIONS}, got {annotations!r}")
    split = OvisSplit.from_file(split_file)
    vocabulary = Vocabulary.from_file(vocabulary_file)
    split.check_classes(vocabulary.names, vocabulary_file)
    metadata = dict(
        class_metadata(vocabulary, split),
        evaluator_type="lvis",
        json_file=json_file,
        image_root=image_root,
        split_file=split_file,
        vocabulary_file=vocabulary_file,
        annotations=annotations,
    )
    kept_ids = set(metadata["base_class_ids"]) if annotations == "base" else None
    id_map = metadata["thing_dataset_id_to_contiguous_id"]
    return register_with_metadata(name, metadata, replace, lambda: load_lvis_ovis_dicts(json_file, image_root, id_map, kept_ids))


def load_lvis_ovis_dicts(json_file: str, image_root: str, id_map: Dict[int, int], kept_ids=None) -> List[dict]:
    """detectron2 dataset dicts with contiguous ``category_id``; annotations of classes outside
    ``kept_ids`` (contiguous ids) dropped when it is given."""
    if not os.path.isfile(json_file):
        raise InputError(json_file, "LVIS annotation file does not exist")
    # load_lvis_json joins image_root and the coco_url folder by string concatenation
    records = load_lvis_json(json_file, os.path.join(image_root, ""))
    for record in records:
        kept = []
        for ann in record["annotations"]:
            lvis_id = ann["category_id"] + 1  # without a dataset name it returns the LVIS id - 1
            if lvis_id not in id_map:
                raise InputError(json_file, f"an annotation of image {record['image_id']} has category_id {lvis_id}, not in the LVIS vocabulary")
            ann["category_id"] = id_map[lvis_id]
            if kept_ids is None or ann["category_id"] in kept_ids:
                kept.append(ann)
        record["annotations"] = kept
    return records
