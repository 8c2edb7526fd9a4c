"""xpseudo's detectron2 modules; importing this package registers them."""
from .grounding_pretrainer import XPMGroundingPretrainer
from .noise_aware_mask_head import NoiseAwareMaskHead
from .open_vocab_predictor import OpenVocabOutputLayers
from .roi_heads import OpenVocabROIHeads
from .student import XPMStudent
from .student_roi_heads import StudentROIHeads
from .teacher import XPMTeacher

__all__ = ["NoiseAwareMaskHead", "OpenVocabOutputLayers", "OpenVocabROIHeads", "StudentROIHeads", "XPMGroundingPretrainer", "XPMStudent", "XPMTeacher"]
