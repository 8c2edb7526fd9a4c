"""Register an open-vocabulary instance segmentation dataset with detectron2.

A dataset is COCO instances (masks of the classes it annotates) and/or COCO captions over one image
folder, plus a base/novel split file. Metadata carries the class list, which classes are base and
novel, and the files, so that models, evaluators and pseudo-labeling all read the same facts.
"""
import json
import logging
import os
import tempfile
from typing import Callable, Dict, List, Optional

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json
from detectron2.structures import BoxMode

from xpseudo.text.vocabulary import Vocabulary
from xpseudo.utils.io import InputError, load_json, require_keys

from .captions import checked_file_name, load_coco_captions
from .image_files import IMAGE_EXTENSIONS, list_images
from .split import SPLITS, OvisSplit
from .weak_labels import WEAK_LABEL_KINDS, check_weak_label_file, weak_label_records

logger = logging.getLogger(__name__)

# annotation fields beyond detectron2's defaults that pseudo-label files carry
EXTRA_ANNOTATION_KEYS = ["score", "word"]


def register_ovis_dataset(
    name: str,
    *,
    image_root: str,
    split_file: str,
    instances_json: Optional[str] = None,
    captions_json: Optional[str] = None,
    vocabulary_file: Optional[str] = None,
    restrict_to: Optional[str] = None,
    caption_vocabulary_file: Optional[str] = None,
    weak_labels: Optional[str] = None,
    replace: bool = False,
):
    """Register ``name`` in DatasetCatalog/MetadataCatalog and return its metadata.

    Args:
        image_root: folder the ``file_name`` of the JSON files are relative to.
        split_file: ``{"base": [...], "novel": [...]}``; every class named must be a dataset class.
        instances_json: COCO instances; its categories are the class list unless ``vocabulary_file``
            is given (pass it for large files so registration does not read them).
        captions_json: COCO captions. Alone it makes a caption-only dataset (records with
            ``captions`` and no annotations); with instances, captions are attached to their images.
        vocabulary_file: categories (with synonyms) as ``xpseudo.text.Vocabulary`` reads them.
        restrict_to: "base" or "novel": the constrained setting, where classes and annotations are
            limited to one split.
        caption_vocabulary_file: a vocabulary that includes classes outside this dataset; captions
            are matched against all of it and mentions of the other classes dropped (COCO's 80
            classes keep "hot dog" from counting as the split's "dog").
        weak_labels: what the labeler (tools/generate_pseudo_labels.py) reads from this dataset
            instead of captions, all from ``instances_json`` (``xpseudo.data.weak_labels``):
            "tags" = class ids per image (``pos_category_ids``); "boxes" = boxes without masks,
            each turned into a mask by the teacher; "points" = one click per object
            (``point_coords``, ``point_labels``), the object being the best proposal holding it;
            "scribbles" = one stroke per object (``scribble``, a polyline), the object being the
            proposal whose mask covers most of it. None: captions (or a mask dataset).
        replace: re-register a name that is registered with other arguments (otherwise an error).
            Registering again with the same arguments is always harmless.
    """
    if instances_json is None and captions_json is None:
        raise ValueError(f"dataset {name!r}: give instances_json, captions_json or both")
    if weak_labels not in (None,) + WEAK_LABEL_KINDS:
        raise ValueError(f"dataset {name!r}: weak_labels must be None or one of {WEAK_LABEL_KINDS}, got {weak_labels!r}")
    if weak_labels is not None and instances_json is None:
        raise ValueError(f"dataset {name!r}: weak_labels {weak_labels!r} are read from instances_json")
    if restrict_to not in (None,) + SPLITS:
        raise ValueError(f"dataset {name!r}: restrict_to must be None, 'base' or 'novel', got {restrict_to!r}")
    split = OvisSplit.from_file(split_file)
    if vocabulary_file is not None:
        vocabulary = Vocabulary.from_file(vocabulary_file)
    elif instances_json is not None:
        vocabulary = Vocabulary.from_file(instances_json)
    else:
        vocabulary = Vocabulary.from_names(split.names)
    split.check_classes(vocabulary.names, vocabulary_file or instances_json or split_file)
    if restrict_to is not None:
        vocabulary = vocabulary.subset(getattr(split, restrict_to))
    metadata = dict(
        class_metadata(vocabulary, split),
        evaluator_type="ovis" if instances_json else "captions",
        json_file=instances_json,
        captions_file=captions_json,
        image_root=image_root,
        split_file=split_file,
        vocabulary_file=vocabulary_file or instances_json,
        restricted_to=restrict_to,
        caption_vocabulary_file=caption_vocabulary_file,
        weak_labels=weak_labels,
    )
    if weak_labels is not None:
        metadata["evaluator_type"] = "weak_labels"  # no masks to evaluate against
    id_map = metadata["thing_dataset_id_to_contiguous_id"]
    return register_with_metadata(
        name, metadata, replace,
        lambda: load_ovis_dicts(instances_json, captions_json, image_root, id_map, drop_other_classes=restrict_to is not None,
                                weak_labels=weak_labels),
    )


CLASS_METADATA_KEYS = ("thing_classes", "thing_dataset_id_to_contiguous_id", "base_classes", "novel_classes", "base_class_ids", "novel_class_ids")


def class_metadata(vocabulary: Vocabulary, split: OvisSplit) -> dict:
    """The class fields of a dataset's metadata: detectron2's thing classes and id map, and which
    classes (names and contiguous ids) are base and novel."""
    classes = vocabulary.names
    return dict(
        thing_classes=classes,
        thing_dataset_id_to_contiguous_id={c.id: i for i, c in enumerate(vocabulary)},
        base_classes=[c for c in classes if c in set(split.base)],
        novel_classes=[c for c in classes if c in set(split.novel)],
        base_class_ids=split.class_ids(classes, "base"),
        novel_class_ids=split.class_ids(classes, "novel"),
    )


def register_with_metadata(name: str, metadata: dict, replace: bool, load: Callable[[], List[dict]]):
    """Register ``load`` and ``metadata`` as ``name``. The same metadata again is a no-op; other
    metadata replaces the entry only with ``replace`` (otherwise an error naming what differs)."""
    if name in DatasetCatalog.list():
        existing = MetadataCatalog.get(name).as_dict()
        changed = sorted(k for k, v in metadata.items() if existing.get(k) != v)
        if not changed:
            return MetadataCatalog.get(name)
        if not replace:
            raise ValueError(f"dataset {name!r} is already registered with other {changed}; pass replace=True to re-register")
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, load)
    MetadataCatalog.get(name).set(**metadata)
    return MetadataCatalog.get(name)


def load_ovis_dicts(
    instances_json: Optional[str],
    captions_json: Optional[str],
    image_root: str,
    id_map: Dict[int, int],
    drop_other_classes: bool = False,
    weak_labels: Optional[str] = None,
) -> List[dict]:
    """detectron2 dataset dicts with contiguous ``category_id`` and, where captions are given, a
    ``captions`` list per image. Annotations of classes outside ``id_map`` are an error unless
    ``drop_other_classes`` (the constrained setting). A weak-label file (``weak_labels`` names its
    kind) is checked entry by entry first and read as ``xpseudo.data.weak_labels`` describes."""
    if weak_labels is not None:
        data = check_weak_label_file(instances_json, weak_labels, id_map)
        records = weak_label_records(data, weak_labels, image_root, id_map)
        for record in records:
            for ann in record.get("annotations", []):
                if "bbox" in ann:
                    ann["bbox_mode"] = BoxMode.XYWH_ABS
        return records
    captions = {}
    if captions_json is not None:
        caption_images, captions = load_coco_captions(captions_json)
        captions = {k: [c for c in v if c.strip()] for k, v in captions.items()}  # empty captions skipped
    if instances_json is None:
        records = [
            {
                "file_name": os.path.join(image_root, im["file_name"]),
                "height": im.get("height"),
                "width": im.get("width"),
                "image_id": im["id"],
                "captions": captions[im["id"]],
            }
            for im in caption_images
            if captions.get(im["id"])
        ]
        if not records:
            raise InputError(captions_json, "no image has a non-empty caption")
        skipped = len(caption_images) - len(records)
        if skipped:
            logger.info(f"{captions_json}: {skipped} images without a non-empty caption skipped")
        return records
    records = load_instances_json(instances_json, image_root)
    for record in records:
        kept = []
        for ann in record.get("annotations", []):
            contiguous = id_map.get(ann["category_id"])
            if contiguous is None:
                if drop_other_classes:
                    continue
                raise InputError(instances_json, f"an annotation of image {record['image_id']} has category_id {ann['category_id']}, not a class of the dataset")
            ann["category_id"] = contiguous
            kept.append(ann)
        record["annotations"] = kept
        if captions_json is not None:
            record["captions"] = captions.get(record["image_id"], [])
    return records


def load_instances_json(instances_json: str, image_root: str) -> List[dict]:
    """detectron2's COCO loader, also for LVIS-style image entries that name their file by
    ``coco_url`` only: such a file is read through a copy whose images carry ``file_name``."""
    try:
        return load_coco_json(instances_json, image_root, None, EXTRA_ANNOTATION_KEYS)
    except KeyError as e:
        if e.args != ("file_name",):
            raise
    data = load_json(instances_json, "instances file")
    for i, image in enumerate(data.get("images", [])):
        image["file_name"] = checked_file_name(instances_json, image, i)
    with tempfile.TemporaryDirectory(prefix="xpseudo-instances-") as tmp:
        copy = os.path.join(tmp, os.path.basename(instances_json))
        with open(copy, "w") as f:
            json.dump(data, f)
        logger.info(f"{instances_json}: images named by coco_url; file names taken from its last component")
        return load_coco_json(copy, image_root, None, EXTRA_ANNOTATION_KEYS)


def register_image_folder(name: str, image_root: str, *, images_json: Optional[str] = None, vocabulary_file: Optional[str] = None,
                          split_file: Optional[str] = None, replace: bool = False):
    """Register unlabeled images (for tools/predict.py): every image file under ``image_root``
    (recursively, sorted; ids 1, 2, ... in that order), or the ``images`` of a COCO file
    (``images_json``, its ids and sizes). A vocabulary and split, when given, name the classes."""
    if vocabulary_file is not None:
        vocabulary = Vocabulary.from_file(vocabulary_file)
    elif split_file is not None:
        vocabulary = Vocabulary.from_names(OvisSplit.from_file(split_file).names)
    else:
        vocabulary = Vocabulary([])
    split = OvisSplit.from_file(split_file) if split_file else OvisSplit([], vocabulary.names)
    split.check_classes(vocabulary.names, vocabulary_file or split_file or name)
    metadata = dict(class_metadata(vocabulary, split), evaluator_type="images", image_root=image_root, json_file=images_json,
                    split_file=split_file, vocabulary_file=vocabulary_file)
    return register_with_metadata(name, metadata, replace, lambda: image_folder_records(image_root, images_json))


def image_folder_records(image_root: str, images_json: Optional[str] = None) -> List[dict]:
    """Records (``file_name``, ``image_id``, and ``height``/``width`` where a COCO file gives them)."""
    if images_json is None:
        names = list_images(image_root)
        if not names:
            raise InputError(image_root, "no image files (" + ", ".join(IMAGE_EXTENSIONS) + ") in this folder")
        return [{"file_name": os.path.join(image_root, n), "image_id": i + 1} for i, n in enumerate(names)]
    data = load_json(images_json, "images file")
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise InputError(images_json, "expected a COCO-style object with an 'images' list")
    records, seen = [], set()
    for i, image in enumerate(data["images"]):
        require_keys(images_json, image, ("id",), f"images[{i}]")
        if image["id"] in seen:
            raise InputError(images_json, f"images[{i}]: image id {image['id']} is listed twice")
        seen.add(image["id"])
        record = {"file_name": os.path.join(image_root, checked_file_name(images_json, image, i)), "image_id": image["id"]}
        record.update({k: image[k] for k in ("height", "width") if k in image})
        records.append(record)
    return records
