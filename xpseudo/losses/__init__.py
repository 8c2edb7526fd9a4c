"""Loss math on plain tensors (no detectron2): caption grounding, and later the noise-aware losses."""
from .grounding import grounding_loss, image_caption_scores

__all__ = ["grounding_loss", "image_caption_scores"]
