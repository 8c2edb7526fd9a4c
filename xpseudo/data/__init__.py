"""Open-vocabulary datasets: split files, captions, and detectron2 registration.

``register_ovis_dataset`` and the builtin registrations need detectron2 and are imported on first
use, so the detectron2-free parts (splits, captions) work without it.
"""
from .captions import load_coco_captions
from .split import OvisSplit

__all__ = ["OvisSplit", "load_coco_captions", "register_ovis_dataset", "register_all_builtin"]


def __getattr__(name):
    if name == "register_ovis_dataset":
        from .ovis_datasets import register_ovis_dataset

        return register_ovis_dataset
    if name == "register_all_builtin":
        from .builtin import register_all_builtin

        return register_all_builtin
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
