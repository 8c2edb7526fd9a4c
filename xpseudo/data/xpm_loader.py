"""Training batches for XPM: annotated images and caption images together in every batch."""
import logging
from typing import List, Sequence

from detectron2.data import DatasetMapper, MetadataCatalog, build_detection_train_loader, get_detection_dataset_dicts
from detectron2.data.samplers import TrainingSampler

from xpseudo.text.caption_matcher import CaptionMatcher
from xpseudo.utils.io import InputError

logger = logging.getLogger(__name__)


def caption_records(dataset_names: Sequence[str], matcher: CaptionMatcher, max_words: int) -> List[dict]:
    """Records of the caption datasets with ``caption_classes`` (vocabulary indices named by the
    image's captions, unioned), matched once here rather than every iteration. Images whose
    captions name no class are dropped and counted."""
    records = get_detection_dataset_dicts(list(dataset_names), filter_empty=False)
    kept = []
    for record in records:
        if "captions" not in record:
            raise InputError(str(dataset_names), f"image {record.get('image_id')} has no 'captions': not a caption dataset")
        classes = matcher.classes_in(record["captions"])[:max_words]
        if classes:
            kept.append({**record, "caption_classes": classes})
    logger.info(f"caption datasets {list(dataset_names)}: {len(kept)} of {len(records)} images have captions naming a class")
    if not kept:
        raise InputError(
            ", ".join(MetadataCatalog.get(n).get("captions_file", n) or n for n in dataset_names),
            f"no caption names any of the {len(matcher.vocabulary)} vocabulary classes",
        )
    return kept


class MixedBatches:
    """Iterates two infinite batch loaders in lock step, yielding the concatenated batches."""

    def __init__(self, annotated, captioned):
        self.annotated, self.captioned = annotated, captioned

    def __iter__(self):
        for annotated, captioned in zip(self.annotated, self.captioned):
            yield annotated + captioned


def build_xpm_train_loader(cfg, mapper=None):
    """detectron2's train loader over DATASETS.TRAIN (SOLVER.IMS_PER_BATCH images a batch), joined,
    when grounding is on, by one over XPM.CAPTION_DATASETS (XPM.CAPTION_IMS_PER_BATCH a batch)."""
    annotated = build_detection_train_loader(cfg, mapper=mapper or DatasetMapper(cfg, True))
    if not cfg.MODEL.XPM.GROUNDING.ENABLED or not cfg.XPM.CAPTION_DATASETS:
        return annotated
    from xpseudo.modeling.vocabulary import dataset_vocabulary

    matcher = CaptionMatcher(dataset_vocabulary(cfg.XPM.CAPTION_DATASETS[0]))
    records = caption_records(cfg.XPM.CAPTION_DATASETS, matcher, cfg.MODEL.XPM.GROUNDING.MAX_WORDS)
    captioned = build_detection_train_loader(
        dataset=records,
        mapper=DatasetMapper(cfg, True),
        sampler=TrainingSampler(len(records), seed=cfg.SEED if cfg.SEED >= 0 else None),
        total_batch_size=cfg.XPM.CAPTION_IMS_PER_BATCH,
        aspect_ratio_grouping=cfg.DATALOADER.ASPECT_RATIO_GROUPING,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
    )
    return MixedBatches(annotated, captioned)
