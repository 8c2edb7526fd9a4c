"""Stage 1 of XPM as the authors ran it: caption grounding as a pretraining of its own.

The model is the teacher's architecture, so its checkpoint initialises the teacher parameter for
parameter (MODEL.WEIGHTS; the authors then freeze the projection, MODEL.XPM.FREEZE_PROJECTION).
Only what grounding uses is trained: the backbone, the box head and the region-to-text
projection. The RPN, box regression, mask head and background embedding never enter the loss,
so they are frozen: DistributedDataParallel requires every trained parameter in every step.
"""
from typing import Dict, List

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY

from .teacher import XPMTeacher

# parameters the grounding loss trains (prefixes of the model's parameter names)
TRAINED = ("backbone.", "roi_heads.box_head.", "roi_heads.box_predictor.projection.")


@META_ARCH_REGISTRY.register()
class XPMGroundingPretrainer(XPMTeacher):
    """Trains on caption images only (DATASETS.TRAIN empty, XPM.CAPTION_DATASETS); every batch
    gives ``loss_grounding`` alone. Configure the authors' stage with MODEL.XPM.GROUNDING.REGIONS
    "grid", WORDS "all" and LOSS "xpm"."""

    @configurable
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if self.word_table is None:
            raise ValueError("XPMGroundingPretrainer needs MODEL.XPM.GROUNDING.ENABLED and XPM.CAPTION_DATASETS")
        for name, parameter in self.named_parameters():
            if not name.startswith(TRAINED):
                parameter.requires_grad_(False)

    def forward(self, batched_inputs: List[Dict]):
        if not self.training:
            return self.inference(batched_inputs)
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        captioned = [i for i, x in enumerate(batched_inputs) if x.get("caption_words")]
        return {"loss_grounding": self.grounding_weight * self._grounding_loss(batched_inputs, images, features, captioned)}
