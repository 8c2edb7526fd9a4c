"""Noise-aware mask distillation (stage 4 of XPM; plain torch, no detectron2).

The student's mask head predicts logits mu and a per-pixel log-variance s (sigma = exp(s / 2)).
On a pseudo mask, the loss is BCE on sampled logits mu + sigma * eps, eps ~ N(0, 1), taken as the
negative log of the likelihood averaged over T samples (the aleatoric loss of Kendall & Gal). With
T = 1 that is plain BCE on one sampled logit, whose expectation only grows with sigma (softplus is
convex), so sigma would learn nothing; with T > 1, where the pseudo mask is likely wrong the head
can raise sigma instead of bending mu to fit it. The mean
sigma of a pseudo object also says how much to trust its class and box, which re-weights those
losses: per object (default) or, as in the authors' release, one scalar per batch.
"""
import math
from typing import Optional

import torch
import torch.nn.functional as F

WEIGHTINGS = ("object", "batch")
# weights from the student's own view of each pseudo object rather than from sigma: how well its
# mask agrees with the pseudo mask, the probability it gives the pseudo class, or their product
SIGNAL_WEIGHTINGS = ("agreement", "class_probability", "agreement_probability")


def sigma_from_log_variance(log_variance: torch.Tensor) -> torch.Tensor:
    return torch.exp(0.5 * log_variance)


def noise_aware_mask_loss(
    logits: torch.Tensor,
    log_variance: torch.Tensor,
    targets: torch.Tensor,
    num_samples: int = 8,
    noise: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Per-instance mean over pixels of -log(mean_t p(target | logits + sigma * eps_t)) for
    N x H x W inputs; returns N losses. ``noise`` (T x N x H x W) defaults to fresh N(0, 1)
    samples, ``num_samples`` of them (pass it to make the loss deterministic). Gradients reach
    both the logits and the log-variance."""
    if noise is None:
        noise = torch.randn((num_samples,) + tuple(logits.shape), dtype=logits.dtype, device=logits.device)
    sampled = logits[None] + sigma_from_log_variance(log_variance)[None] * noise
    targets = targets.to(logits.dtype)[None].expand_as(sampled)
    log_likelihood = -F.binary_cross_entropy_with_logits(sampled, targets, reduction="none")
    log_mean = torch.logsumexp(log_likelihood, dim=0) - math.log(sampled.shape[0])
    return -log_mean.flatten(1).mean(1)


def pseudo_loss_weights(
    mean_sigma: torch.Tensor, objects: Optional[torch.Tensor] = None, mode: str = "object", scale: float = 1.0
) -> torch.Tensor:
    """Weights for the classification and box losses of N pseudo instances (proposals matched to
    pseudo objects), from each instance's mean mask sigma; detached (they scale losses, they are
    not trained through).

    - "object": w = scale / (mean sigma of the instance's object), averaging over all instances of
      one object (``objects`` gives each instance's object id; None: every instance its own);
    - "batch": w = scale / (mean sigma over all N), the same for all (the authors' release, with
      scale c = 0.01).
    Instances have the same number of mask pixels, so these are means over pixels too.
    """
    if mode not in WEIGHTINGS:
        raise ValueError(f"pseudo loss weighting must be one of {WEIGHTINGS}, got {mode!r}")
    mean_sigma = mean_sigma.detach()
    if mean_sigma.numel() == 0:
        return mean_sigma.new_zeros(0)
    if mode == "batch":
        return (scale / mean_sigma.mean()).expand(mean_sigma.shape[0]).clone()
    if objects is None:
        return scale / mean_sigma
    ids, inverse = torch.unique(objects, return_inverse=True)
    sums = mean_sigma.new_zeros(len(ids)).index_add_(0, inverse, mean_sigma)
    counts = mean_sigma.new_zeros(len(ids)).index_add_(0, inverse, torch.ones_like(mean_sigma))
    return scale / (sums / counts)[inverse]


def mask_agreement(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """IoU of the predicted mask (logit > 0) and the target mask, per instance, for N x H x W
    inputs (both cropped to the same box); 1 where both are empty. Detached."""
    predicted = logits.detach() > 0
    targets = targets.bool()
    intersection = (predicted & targets).flatten(1).sum(1).to(logits.dtype)
    union = (predicted | targets).flatten(1).sum(1).to(logits.dtype)
    return torch.where(union > 0, intersection / union.clamp(min=1), torch.ones_like(union))


def signal_loss_weights(signal: torch.Tensor, objects: Optional[torch.Tensor] = None, warmup: float = 1.0) -> torch.Tensor:
    """Weights for N pseudo instances from a per-instance signal in [0, 1] (``mask_agreement``, a
    class probability, or their product): the mean signal over each object's instances
    (``objects``: their object ids; None: every instance its own), blended with 1 by ``warmup`` in
    [0, 1] -- ``1 - warmup + warmup * signal`` -- so the first iterations, when the student's view
    is still the teacher's, do not weight everything down. Detached."""
    signal = signal.detach()
    if signal.numel() == 0:
        return signal.new_zeros(0)
    if objects is not None:
        ids, inverse = torch.unique(objects, return_inverse=True)
        sums = signal.new_zeros(len(ids)).index_add_(0, inverse, signal)
        counts = signal.new_zeros(len(ids)).index_add_(0, inverse, torch.ones_like(signal))
        signal = (sums / counts)[inverse]
    warmup = min(max(float(warmup), 0.0), 1.0)
    return 1.0 - warmup + warmup * signal
