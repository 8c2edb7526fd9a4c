"""The student's training data: ground truth plus a pseudo-label file (see ``student_dataset``).

The pseudo-label file is checked and indexed once per node (``open_pseudo_label_index``), images
only the pseudo labels have are sampled with their own repeat factor (``student_sampler``), and
``PseudoAwareDatasetMapper`` keeps which instances are pseudo.
"""
import logging
import os
from typing import Callable, Optional, Sequence

import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog, get_detection_dataset_dicts
from detectron2.data import detection_utils as utils
from detectron2.data.samplers import RepeatFactorTrainingSampler
from detectron2.structures import BitMasks
from detectron2.utils import comm

from xpseudo.pseudo.index_from_json import build_index_from_json
from xpseudo.pseudo.label_index import PseudoLabelIndex, index_path, is_fresh
from xpseudo.utils.io import InputError, load_json

from .ovis_datasets import CLASS_METADATA_KEYS, register_with_metadata
from .scaling import VectorizedRepeatFactorSampler
from .student_dataset import PseudoLabelRecords, StudentDataset
from .training_gate import check_annotated_records

logger = logging.getLogger(__name__)


def _on_some_ranks(run: bool, work: Callable[[], None]) -> None:
    """Run ``work`` where ``run`` is true; a failure there is raised on every process (the others
    would otherwise wait at the next collective until it times out)."""
    failure = None
    if run:
        try:
            work()
        except Exception as e:  # handed to every process below, then raised here as it was
            failure = e
    failures = comm.all_gather(None if failure is None else (type(failure).__name__, str(failure), getattr(failure, "path", None), getattr(failure, "problem", None))) if comm.get_world_size() > 1 else [None]
    if failure is not None:
        raise failure
    for other in failures:
        if other is not None:
            name, message, path, problem = other
            raise InputError(path, problem) if name == "InputError" else RuntimeError(f"another process failed: {name}: {message}")


def _fresh_index(path: str, candidates: Sequence[str]) -> Optional[str]:
    return next((c for c in candidates if os.path.exists(c) and is_fresh(c, path)), None)


def open_pseudo_label_index(path: str, image_root: str, fallback_dir: str = "") -> PseudoLabelIndex:
    """The index of pseudo-label file ``path`` (``xpseudo.pseudo.label_index``), made once per
    node rather than once per process: the global rank 0 builds it when it is missing or stale
    (checking every entry and image file) or, when the merge checked the images under another
    folder, checks them under ``image_root``; then a node that cannot see that index (no shared
    file system) has its local rank 0 build one. The index goes beside the file, or into
    ``fallback_dir`` where that folder is read-only."""
    if not os.path.isfile(path):
        raise InputError(path, "pseudo-label file does not exist")
    beside = index_path(path)
    candidates = [beside] + ([os.path.join(fallback_dir, os.path.basename(beside))] if fallback_dir else [])
    writable = beside if os.access(os.path.dirname(os.path.abspath(path)), os.W_OK) or not fallback_dir else candidates[1]

    def build_or_check():
        found = _fresh_index(path, candidates)
        if found is None:
            logger.info(f"indexing {path} (once: later runs reuse {writable})")
            build_index_from_json(path, writable, image_root)
        else:
            index = PseudoLabelIndex(found, path)
            if index.images_checked_under != image_root:
                index.check_image_files(image_root)

    def build_if_unseen():
        if _fresh_index(path, candidates) is None:
            build_index_from_json(path, writable)

    _on_some_ranks(comm.get_rank() == 0, build_or_check)
    _on_some_ranks(comm.get_local_rank() == 0 and comm.get_rank() != 0, build_if_unseen)
    return PseudoLabelIndex(_fresh_index(path, candidates), path)


def pseudo_label_records(path: str, like_dataset: str, fallback_dir: str = "") -> PseudoLabelRecords:
    """The pseudo-label file's records, with the classes and image folder of the dataset it
    labels (``like_dataset``), after checking it (see ``open_pseudo_label_index``)."""
    like = MetadataCatalog.get(like_dataset)
    index = open_pseudo_label_index(path, like.image_root, fallback_dir)
    return PseudoLabelRecords(index, like.image_root, like.thing_dataset_id_to_contiguous_id)


def register_pseudo_labels(name: str, path: str, like_dataset: str, fallback_dir: str = "") -> PseudoLabelRecords:
    """Register the pseudo-label file as ``name`` with the classes, split and image folder of
    ``like_dataset``; ``DatasetCatalog.get(name)`` then gives its records as a list (as detectron2
    would load the file). Returns the lazy records the student trains on."""
    like = MetadataCatalog.get(like_dataset)
    records = pseudo_label_records(path, like_dataset, fallback_dir)
    metadata = dict(
        {key: like.get(key) for key in CLASS_METADATA_KEYS},
        evaluator_type="ovis", json_file=path, image_root=like.image_root, split_file=like.split_file,
        vocabulary_file=like.get("vocabulary_file"), restricted_to=None, caption_vocabulary_file=None,
    )
    register_with_metadata(name, metadata, True, lambda: [records[i] for i in range(len(records))])
    return records


def pseudo_labeled_dataset(cfg) -> str:
    """The dataset XPM.PSEUDO_LABELS_FILE was made on (see XPM.PSEUDO_LABELED_DATASET): its file
    names are relative to that dataset's image_root."""
    if cfg.XPM.PSEUDO_LABELED_DATASET:
        return cfg.XPM.PSEUDO_LABELED_DATASET
    path = os.path.abspath(cfg.XPM.PSEUDO_LABELS_FILE)
    # tools/predict.py writes <name>.provenance.json beside its file; the labeler provenance.json
    candidates = [os.path.splitext(path)[0] + ".provenance.json", os.path.join(os.path.dirname(path), "provenance.json")]
    provenance = next((p for p in candidates if os.path.isfile(p)), None)
    if provenance is not None:
        name = load_json(provenance, "provenance file").get("dataset")
        if name:
            if name not in DatasetCatalog.list():
                raise InputError(provenance, f"'dataset' {name!r} is not registered here; register it or set XPM.PSEUDO_LABELED_DATASET")
            return name
    return cfg.DATASETS.TRAIN[0]


def student_train_dataset(cfg) -> StudentDataset:
    """DATASETS.TRAIN merged with XPM.PSEUDO_LABELS_FILE (registered as XPM.PSEUDO_DATASET)."""
    pseudo = register_pseudo_labels(cfg.XPM.PSEUDO_DATASET, cfg.XPM.PSEUDO_LABELS_FILE, pseudo_labeled_dataset(cfg), cfg.OUTPUT_DIR)
    gt = get_detection_dataset_dicts(list(cfg.DATASETS.TRAIN), filter_empty=False)
    check_annotated_records(gt, cfg.DATASETS.TRAIN)  # the pseudo labels are checked when indexed
    dataset = StudentDataset(gt, pseudo)
    logger.info(f"{dataset.num_gt} ground-truth images, {len(pseudo)} pseudo-labeled; {len(dataset.pseudo_only)} images only pseudo-labeled")
    return dataset


def student_repeat_factors(pseudo_only: Sequence[bool], pseudo_factor: float, category_factors: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-item repeat factors: ``pseudo_factor`` where ``pseudo_only`` (negative: ground-truth
    images / pseudo-only images, so each source is about half the samples), 1 for the others,
    times ``category_factors`` when given."""
    pseudo_only = torch.as_tensor(np.asarray(pseudo_only, dtype=bool))
    num_pseudo = int(pseudo_only.sum())
    if pseudo_factor < 0:
        pseudo_factor = (len(pseudo_only) - num_pseudo) / num_pseudo if num_pseudo else 1.0
    factors = torch.where(pseudo_only, torch.tensor(float(pseudo_factor)), torch.tensor(1.0))
    if category_factors is not None:
        factors = factors * category_factors
    logger.info(f"{num_pseudo} pseudo-only images sampled x{pseudo_factor:.3g} against {len(pseudo_only) - num_pseudo} with ground truth")
    return factors


def student_sampler(cfg, dataset: StudentDataset) -> Optional[VectorizedRepeatFactorSampler]:
    """The sampler for the student's dataset, or None when detectron2's default (from the
    config) already samples it as asked."""
    category_factors = None
    if cfg.DATALOADER.SAMPLER_TRAIN == "RepeatFactorTrainingSampler":
        category_factors = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(
            dataset.category_view(), cfg.DATALOADER.REPEAT_THRESHOLD, sqrt=cfg.DATALOADER.REPEAT_SQRT
        )
    elif cfg.XPM.PSEUDO_REPEAT_FACTOR == 1.0:
        return None
    factors = student_repeat_factors(dataset.pseudo_only_flags(), cfg.XPM.PSEUDO_REPEAT_FACTOR, category_factors)
    return VectorizedRepeatFactorSampler(factors, seed=cfg.SEED if cfg.SEED >= 0 else None)


class PseudoAwareDatasetMapper(DatasetMapper):
    """DatasetMapper that keeps each annotation's ``pseudo`` flag as ``instances.gt_pseudo`` and,
    where the image's pseudo labels have them, their uncertain pixels
    (``uncertain_segmentation``) as ``instances.gt_uncertain`` (BitMasks, transformed as the
    masks are; empty for ground truth)."""

    def _transform_annotations(self, dataset_dict, transforms, image_shape):
        kept = [obj for obj in dataset_dict.pop("annotations") if obj.get("iscrowd", 0) == 0]
        bands = [obj.pop("uncertain_segmentation", None) for obj in kept]
        annotations = [utils.transform_instance_annotations(obj, transforms, image_shape) for obj in kept]
        instances = utils.annotations_to_instances(annotations, image_shape, mask_format=self.instance_mask_format)
        instances.gt_pseudo = torch.tensor([bool(a.get("pseudo", False)) for a in annotations], dtype=torch.bool)
        if any(b is not None for b in bands):
            instances.gt_uncertain = _uncertain_masks(bands, transforms, image_shape)
        if self.recompute_boxes:
            instances.gt_boxes = instances.gt_masks.get_bounding_boxes()
        dataset_dict["instances"] = utils.filter_empty_instances(instances)


def _uncertain_masks(bands, transforms, image_shape) -> BitMasks:
    """Each annotation's uncertain pixels (an RLE, or None: none), transformed like its mask."""
    height, width = image_shape
    masks = []
    for band in bands:
        if band is None:
            masks.append(np.zeros((height, width), dtype=bool))
            continue
        decoded = mask_util.decode({"size": band["size"], "counts": band["counts"].encode()})  # string counts: checked when indexed
        masks.append(transforms.apply_segmentation(decoded).astype(bool))
    return BitMasks(torch.as_tensor(np.stack(masks)))
