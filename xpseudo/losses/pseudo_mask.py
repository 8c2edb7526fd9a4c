"""Per-pixel losses for the student's pseudo masks beside the noise-aware one (plain torch).

All take N x H x W mask logits and targets (the pseudo masks cropped to each proposal) and return
one loss per instance, the mean over its counted pixels, like ``noise_aware_mask_loss``:

- ``"bce"``: plain binary cross-entropy, as for ground truth.
- ``"confidence_guided"`` (CLIP-ES's confidence-guided loss): pixels where the teacher was unsure
  (its mask probability in an uncertain band, stored with the pseudo labels as
  ``uncertain_segmentation``) are ignored; the rest get plain BCE.
- ``"response_scaling"`` (after URN): the student's own prediction is scaled several times and the
  spread of the scaled responses is the pixel's uncertainty u; the BCE is weighted by 1 - u. The
  scaling multiplies the odds, sigmoid(mu + log s): a pixel the student is sure of (|mu| large)
  answers every scale alike (u ~ 0), one near the decision boundary swings (u largest at mu = 0).
"""
import math
from typing import Sequence

import torch
import torch.nn.functional as F

MASK_LOSSES = ("noise_aware", "bce", "confidence_guided", "response_scaling")


def bce_mask_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none").flatten(1).mean(1)


def confidence_guided_mask_loss(logits: torch.Tensor, targets: torch.Tensor, uncertain: torch.Tensor) -> torch.Tensor:
    """BCE averaged over the pixels outside ``uncertain`` (N x H x W bool); an instance whose every
    pixel is uncertain has loss 0 (its gradient too)."""
    counted = (~uncertain.bool()).to(logits.dtype)
    per_pixel = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none")
    return (per_pixel * counted).flatten(1).sum(1) / counted.flatten(1).sum(1).clamp(min=1)


def uncertain_band(probabilities: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Pixels whose teacher mask probability p lies in [low, high]: the band CGL ignores."""
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"an uncertain band needs 0 <= low <= high <= 1, got [{low}, {high}]")
    return (probabilities >= low) & (probabilities <= high)


def response_scaling_uncertainty(logits: torch.Tensor, scales: Sequence[float]) -> torch.Tensor:
    """u = max_s sigmoid(mu + log s) - min_s sigmoid(mu + log s) over ``scales`` (odds factors, > 0),
    detached: in [0, 1), 0 where every scale gives the same response."""
    if len(scales) < 2 or min(scales) <= 0:
        raise ValueError(f"response scaling needs at least two positive scales, got {list(scales)}")
    shifts = torch.tensor([math.log(s) for s in scales], dtype=logits.dtype, device=logits.device)
    responses = torch.sigmoid(logits.detach()[None] + shifts.view(-1, *([1] * logits.dim())))
    return responses.amax(0) - responses.amin(0)


def response_scaling_mask_loss(logits: torch.Tensor, targets: torch.Tensor, scales: Sequence[float] = (0.25, 4.0)) -> torch.Tensor:
    """Per-pixel BCE weighted by 1 - ``response_scaling_uncertainty``, averaged over the pixels."""
    weights = 1.0 - response_scaling_uncertainty(logits, scales)
    per_pixel = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none")
    return (per_pixel * weights).flatten(1).mean(1)
