"""Training batches for XPM: annotated images and caption images together in every batch."""
import functools
import logging
import random
from typing import List, Sequence, Tuple

from detectron2.data import DatasetMapper, MetadataCatalog, build_detection_train_loader, get_detection_dataset_dicts
from detectron2.data.build import _train_loader_from_config  # the sampler and settings detectron2 reads from cfg
from detectron2.data.samplers import TrainingSampler

from xpseudo.text.caption_matcher import CaptionMatcher
from xpseudo.text.caption_words import caption_word_choices, caption_word_table
from xpseudo.text.vocabulary import Vocabulary
from xpseudo.utils.io import InputError

from .training_gate import SkipUndecodableImages, check_annotated_records

logger = logging.getLogger(__name__)


def caption_records(
    dataset_names: Sequence[str], matcher: CaptionMatcher, mode: str = "vocabulary", min_count: int = 1, max_words: int = 0
) -> Tuple[Vocabulary, List[dict]]:
    """The caption word table and the records of the caption datasets with ``caption_words``
    (indices into the table; see ``xpseudo.text.caption_word_table``), matched once here rather
    than every iteration. Images whose captions name no class are dropped and counted. In
    "one_caption" mode the records hold ``caption_word_choices`` (one list per caption; see
    ``xpseudo.text.caption_word_choices``) and are kept whenever a caption has a word."""
    records = get_detection_dataset_dicts(list(dataset_names), filter_empty=False)
    for record in records:
        if "captions" not in record:
            raise InputError(str(dataset_names), f"image {record.get('image_id')} has no 'captions': not a caption dataset")
    num_classes = len(matcher.vocabulary)
    if mode == "one_caption":  # every image with a word; the caption is drawn per step (OneCaptionPerStep)
        table, choices = caption_word_choices(matcher, [r["captions"] for r in records], min_count)
        kept = [{**r, "caption_word_choices": [c for c in per_caption if c]} for r, per_caption in zip(records, choices) if any(per_caption)]
    else:
        table, words = caption_word_table(matcher, [r["captions"] for r in records], mode, min_count, max_words)
        # an image is grounded when it names at least one class: those are the words pseudo-labels need
        kept = [{**r, "caption_words": w} for r, w in zip(records, words) if w and w[0] < num_classes]
    logger.info(
        f"caption datasets {list(dataset_names)}: {len(kept)} of {len(records)} images grounded; "
        f"{len(table)} words in the table ({mode!r} mode)"
    )
    if not kept:
        raise InputError(
            ", ".join(MetadataCatalog.get(n).get("captions_file", n) or n for n in dataset_names),
            f"no caption names any of the {num_classes} vocabulary classes" if mode != "one_caption" else "no caption has a word to ground",
        )
    return table, kept


@functools.lru_cache(maxsize=2)
def _grounding_data(dataset_names: Tuple[str, ...], mode: str, min_count: int, max_words: int, files: Tuple):
    from xpseudo.modeling.vocabulary import dataset_caption_matcher

    matcher = dataset_caption_matcher(dataset_names[0])
    return caption_records(dataset_names, matcher, mode, min_count, max_words)


def grounding_data(cfg) -> Tuple[Vocabulary, List[dict]]:
    """(word table, caption records) of the config's caption datasets. Built once per process:
    the model (its word embeddings) and the loader (its records) both ask for it."""
    grounding = cfg.MODEL.XPM.GROUNDING
    names = tuple(cfg.XPM.CAPTION_DATASETS)
    # the files behind the names are part of the key: a name re-registered elsewhere is new data
    files = tuple((MetadataCatalog.get(n).get("captions_file"), MetadataCatalog.get(n).get("image_root")) for n in names)
    return _grounding_data(names, grounding.WORDS, grounding.MIN_WORD_COUNT, grounding.MAX_WORDS, files)


class MixedBatches:
    """Iterates two infinite batch loaders in lock step, yielding the concatenated batches."""

    def __init__(self, annotated, captioned):
        self.annotated, self.captioned = annotated, captioned

    def __iter__(self):
        for annotated, captioned in zip(self.annotated, self.captioned):
            yield annotated + captioned


def build_xpm_train_loader(cfg, mapper=None):
    """detectron2's train loader over DATASETS.TRAIN (SOLVER.IMS_PER_BATCH images a batch; merged
    with XPM.PSEUDO_LABELS_FILE for the student), joined, when grounding is on, by one over
    XPM.CAPTION_DATASETS (XPM.CAPTION_IMS_PER_BATCH a batch). With DATASETS.TRAIN empty (the
    grounding pretraining) the caption loader alone."""
    if not cfg.DATASETS.TRAIN:
        if not cfg.MODEL.XPM.GROUNDING.ENABLED or not cfg.XPM.CAPTION_DATASETS:
            raise ValueError("DATASETS.TRAIN is empty and there are no caption images to train on (XPM.CAPTION_DATASETS)")
        return caption_loader(cfg)
    if cfg.XPM.PSEUDO_LABELS_FILE:
        from .pseudo_dataset import PseudoAwareDatasetMapper, student_sampler, student_train_dataset
        from .scaling import MapWithRetry

        # detectron2's loader with the config's settings, but the mapping and sampling pieces that
        # hold nothing per item (MapWithRetry, VectorizedRepeatFactorSampler): millions of images
        dataset = student_train_dataset(cfg)
        annotated = build_detection_train_loader(
            dataset=MapWithRetry(dataset, SkipUndecodableImages(mapper or PseudoAwareDatasetMapper(cfg, True))),
            mapper=None,
            sampler=student_sampler(cfg, dataset) or TrainingSampler(len(dataset), seed=cfg.SEED),
            total_batch_size=cfg.SOLVER.IMS_PER_BATCH,
            aspect_ratio_grouping=cfg.DATALOADER.ASPECT_RATIO_GROUPING,
            num_workers=cfg.DATALOADER.NUM_WORKERS,
        )
    else:
        settings = _train_loader_from_config(cfg, mapper=SkipUndecodableImages(mapper or DatasetMapper(cfg, True)))
        check_annotated_records(settings["dataset"], cfg.DATASETS.TRAIN)
        annotated = build_detection_train_loader(**settings)
    if not cfg.MODEL.XPM.GROUNDING.ENABLED or not cfg.XPM.CAPTION_DATASETS:
        return annotated
    return MixedBatches(annotated, caption_loader(cfg))


class OneCaptionPerStep:
    """A dataset mapper that maps like ``mapper`` after giving the record the words of one of its
    captions, drawn at random each time (``caption_word_choices``; the authors' stage-1 words)."""

    def __init__(self, mapper):
        self.mapper = mapper

    def __call__(self, record: dict):
        return self.mapper(dict(record, caption_words=random.choice(record["caption_word_choices"])))


def caption_loader(cfg):
    """Batches of XPM.CAPTION_IMS_PER_BATCH caption images with their ``caption_words``."""
    _, records = grounding_data(cfg)
    mapper = DatasetMapper(cfg, True)
    if cfg.MODEL.XPM.GROUNDING.WORDS == "one_caption":
        mapper = OneCaptionPerStep(mapper)
    return build_detection_train_loader(
        dataset=records,
        mapper=SkipUndecodableImages(mapper),
        sampler=TrainingSampler(len(records), seed=cfg.SEED if cfg.SEED >= 0 else None),
        total_batch_size=cfg.XPM.CAPTION_IMS_PER_BATCH,
        aspect_ratio_grouping=cfg.DATALOADER.ASPECT_RATIO_GROUPING,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
    )
