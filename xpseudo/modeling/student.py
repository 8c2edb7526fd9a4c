"""XPM student: the teacher's architecture trained on ground truth plus pseudo labels."""
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY

from .noise_aware_mask_head import NoiseAwareMaskHead
from .student_roi_heads import StudentROIHeads
from .teacher import XPMTeacher


@META_ARCH_REGISTRY.register()
class XPMStudent(XPMTeacher):
    """Same forward as XPMTeacher; its ROI heads (``StudentROIHeads`` with a
    ``NoiseAwareMaskHead``) treat instances flagged ``gt_pseudo`` as noisy. Starts from the teacher's
    weights (MODEL.WEIGHTS); optionally with the backbone and/or RPN frozen, as the authors did.
    Any number of images per batch; each image's pseudo and ground-truth instances are handled
    separately inside the heads."""

    @configurable
    def __init__(self, *, freeze_backbone: bool = False, freeze_rpn: bool = False, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(self.roi_heads, StudentROIHeads) or not isinstance(self.roi_heads.mask_head, NoiseAwareMaskHead):
            raise ValueError("XPMStudent needs MODEL.ROI_HEADS.NAME StudentROIHeads and MODEL.ROI_MASK_HEAD.NAME NoiseAwareMaskHead")
        frozen = ([self.backbone] if freeze_backbone else []) + ([self.proposal_generator] if freeze_rpn else [])
        for module in frozen:
            for parameter in module.parameters():
                parameter.requires_grad_(False)
        self.frozen_modules = frozen

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        ret.update(freeze_backbone=cfg.MODEL.XPM.STUDENT.FREEZE_BACKBONE, freeze_rpn=cfg.MODEL.XPM.STUDENT.FREEZE_RPN)
        return ret

    def train(self, mode: bool = True):
        super().train(mode)
        for module in self.frozen_modules:  # frozen parts also keep their batch-norm statistics
            module.train(False)
        return self
