"""Cross-modal pseudo-labeling (stage 3 of XPM).

``selection``, ``annotations`` and ``shards`` need no detectron2; ``labeler`` and ``generate`` do
and are imported by name.
"""
from .annotations import encode_pseudo_annotations
from .selection import Selection, SelectionConfig, region_word_scores, select_regions
from .shards import STATUSES, ShardWriter, find_shards, iter_shard, merge_shards, shard_bounds, shard_path

__all__ = [
    "encode_pseudo_annotations",
    "Selection",
    "SelectionConfig",
    "region_word_scores",
    "select_regions",
    "STATUSES",
    "ShardWriter",
    "find_shards",
    "iter_shard",
    "merge_shards",
    "shard_bounds",
    "shard_path",
]
