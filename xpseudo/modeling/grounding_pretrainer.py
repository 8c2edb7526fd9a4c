"""Stage 1 of XPM as the authors ran it: caption grounding as a pretraining of its own.

The model is the teacher's architecture, so its checkpoint initialises the teacher parameter for
parameter (MODEL.WEIGHTS; the authors then freeze the projection, MODEL.XPM.FREEZE_PROJECTION).
Only what grounding uses is trained: the backbone up to the grid feature map, the box head and
the region-to-text projection. The RPN, box regression, mask head, background embedding (and,
with FPN, the other levels' output convolutions) never enter the loss, so they are frozen:
DistributedDataParallel requires every trained parameter in every step.
"""
from typing import Dict, List, Set

import torch

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
        reached = self._grid_feature_parameters() if self.grounding_region_source == "grid" else None
        for name, parameter in self.named_parameters():
            if not name.startswith(TRAINED) or (reached is not None and name.startswith("backbone.") and name not in reached):
                parameter.requires_grad_(False)

    def _grid_feature_parameters(self) -> Set[str]:
        """Backbone parameters the grid feature map depends on (FPN: not the other levels' output
        convolutions), found by one backward pass of a blank image."""
        was_training = self.backbone.training
        self.backbone.eval()  # no batch-norm statistics from the probe
        try:
            size = max(self.backbone.size_divisibility, 32) * 2
            with torch.enable_grad():
                probe = self.backbone(torch.zeros(1, 3, size, size, device=self.device))[self.grid_feature].sum()
                named = [(n, p) for n, p in self.backbone.named_parameters() if p.requires_grad]
                grads = torch.autograd.grad(probe, [p for _, p in named], allow_unused=True)
        finally:
            self.backbone.train(was_training)
        return {"backbone." + n for (n, _), g in zip(named, grads) if g is not None}

    def forward(self, batched_inputs: List[Dict]):
        if not self.training:
            return self.inference(batched_inputs)
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        captioned = [i for i, x in enumerate(batched_inputs) if x.get("caption_words")]
        return {"loss_grounding": self.grounding_weight * self._grounding_loss(batched_inputs, images, features, captioned)}
