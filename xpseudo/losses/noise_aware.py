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
# mask agrees with the pseudo mask, the probability it gives the pseudo class, their product, or
# ("_relative") the probability or the product over its running mean for the object's class
SIGNAL_WEIGHTINGS = ("agreement", "class_probability", "agreement_probability",
                     "class_probability_relative", "agreement_probability_relative")


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
    return scale / object_means(mean_sigma, objects)


def object_means(values: torch.Tensor, objects: Optional[torch.Tensor]) -> torch.Tensor:
    """Each instance's value replaced by the mean over the instances of its object (``objects``:
    each instance's object id; None: every instance its own object)."""
    if objects is None or values.numel() == 0:
        return values
    ids, inverse = torch.unique(objects, return_inverse=True)
    sums = values.new_zeros(len(ids)).index_add_(0, inverse, values)
    counts = values.new_zeros(len(ids)).index_add_(0, inverse, torch.ones_like(values))
    return (sums / counts)[inverse]


def mask_agreement(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """IoU of the predicted mask (logit > 0) and the target mask, per instance, for N x H x W
    inputs (both cropped to the same box); 1 where both are empty. Detached."""
    predicted = logits.detach() > 0
    targets = targets.bool()
    intersection = (predicted & targets).flatten(1).sum(1).to(logits.dtype)
    union = (predicted | targets).flatten(1).sum(1).to(logits.dtype)
    return torch.where(union > 0, intersection / union.clamp(min=1), torch.ones_like(union))


def signal_loss_weights(signal: torch.Tensor, objects: Optional[torch.Tensor] = None, warmup: float = 1.0) -> torch.Tensor:
    """Weights for N pseudo instances from a per-instance signal (``mask_agreement``, a class
    probability, their product, or one of these relative to its class mean): the mean signal over
    each object's instances (``objects``: their object ids; None: every instance its own), blended
    with 1 by ``warmup`` in [0, 1] -- ``1 - warmup + warmup * signal`` -- so the first iterations,
    when the student's view is still the teacher's, do not weight everything down. Detached."""
    signal = signal.detach()
    if signal.numel() == 0:
        return signal.new_zeros(0)
    signal = object_means(signal, objects)
    warmup = min(max(float(warmup), 0.0), 1.0)
    return 1.0 - warmup + warmup * signal


def class_signal_sums(signal: torch.Tensor, classes: torch.Tensor, num_classes: int) -> torch.Tensor:
    """2 x num_classes: the sum of ``signal`` over the objects of each class and their count (one
    entry per object), to be summed over processes before ``updated_class_means``."""
    sums = signal.new_zeros(2, num_classes)
    sums[0].index_add_(0, classes, signal.detach())
    sums[1].index_add_(0, classes, torch.ones_like(signal))
    return sums


def updated_class_means(means: torch.Tensor, sums: torch.Tensor, momentum: float) -> torch.Tensor:
    """Running mean signal per class: ``momentum * old + (1 - momentum) * this batch's mean`` for
    the classes in the batch (``sums`` from ``class_signal_sums``); a class's first batch sets its
    mean; NaN marks a class not seen yet."""
    seen = sums[1] > 0
    batch = sums[0] / sums[1].clamp(min=1)
    fresh = seen & torch.isnan(means)
    blended = momentum * means + (1 - momentum) * batch
    return torch.where(fresh, batch, torch.where(seen, blended, means))


def class_relative_signal(signal: torch.Tensor, classes: torch.Tensor, means: torch.Tensor, max_weight: float) -> torch.Tensor:
    """``signal`` over its class's running mean, at most ``max_weight``: a class the student has
    not learned yet (its probabilities all near 0) still gets a mean weight of about 1, and within
    a class the objects the student believes weigh more. 1 where the mean is unknown or 0."""
    mean = means[classes]
    usable = torch.isfinite(mean) & (mean > 0)
    relative = torch.where(usable, signal.detach() / torch.where(usable, mean, torch.ones_like(mean)), torch.ones_like(signal))
    return relative.clamp(max=max_weight)
