"""Loss math on plain tensors (no detectron2): caption grounding, noise-aware distillation, the
other pseudo-mask losses and pixel-to-prototype contrast."""
from .grounding import LOSS_FORMS, grounding_loss, image_caption_score_parts, image_caption_scores
from .noise_aware import (
    SIGNAL_WEIGHTINGS,
    WEIGHTINGS,
    mask_agreement,
    noise_aware_mask_loss,
    pseudo_loss_weights,
    sigma_from_log_variance,
    signal_loss_weights,
)
from .prototype_contrast import PrototypeBank, prototype_contrast_loss, sample_anchor_pixels
from .pseudo_mask import (
    MASK_LOSSES,
    bce_mask_loss,
    confidence_guided_mask_loss,
    response_scaling_mask_loss,
    response_scaling_uncertainty,
    uncertain_band,
)

__all__ = [
    "LOSS_FORMS",
    "grounding_loss",
    "image_caption_score_parts",
    "image_caption_scores",
    "SIGNAL_WEIGHTINGS",
    "WEIGHTINGS",
    "mask_agreement",
    "signal_loss_weights",
    "noise_aware_mask_loss",
    "pseudo_loss_weights",
    "sigma_from_log_variance",
    "PrototypeBank",
    "prototype_contrast_loss",
    "sample_anchor_pixels",
    "MASK_LOSSES",
    "bce_mask_loss",
    "confidence_guided_mask_loss",
    "response_scaling_mask_loss",
    "response_scaling_uncertainty",
    "uncertain_band",
]
