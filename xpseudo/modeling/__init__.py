"""xpseudo's detectron2 modules; importing this package registers them."""
from .open_vocab_predictor import OpenVocabOutputLayers
from .roi_heads import OpenVocabROIHeads
from .teacher import XPMTeacher

__all__ = ["OpenVocabOutputLayers", "OpenVocabROIHeads", "XPMTeacher"]
