"""Loss math on plain tensors (no detectron2): caption grounding and noise-aware distillation."""
from .grounding import LOSS_FORMS, grounding_loss, image_caption_score_parts, image_caption_scores
from .noise_aware import WEIGHTINGS, noise_aware_mask_loss, pseudo_loss_weights, sigma_from_log_variance

__all__ = [
    "LOSS_FORMS",
    "grounding_loss",
    "image_caption_score_parts",
    "image_caption_scores",
    "WEIGHTINGS",
    "noise_aware_mask_loss",
    "pseudo_loss_weights",
    "sigma_from_log_variance",
]
