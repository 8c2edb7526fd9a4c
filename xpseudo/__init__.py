"""xpseudo: XPM cross-modal pseudo-labeling for open-vocabulary instance segmentation.

The sub-packages ``xpseudo.text``, ``xpseudo.evaluation`` (core) and ``xpseudo.data`` (formats,
splits, captions) import without detectron2; the detectron2 parts (dataset registration, the
detectron2 evaluator, models) are imported only where they are used.
"""

__version__ = "0.1.0"
