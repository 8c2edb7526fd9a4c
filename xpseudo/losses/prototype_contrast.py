"""Pixel-to-prototype contrast for mask features (plain torch; after the pixel-to-prototype contrast of weakly supervised segmentation).

Each class c has a prototype P_c, a momentum average of the L2-normalised mask-feature pixels that
belong to c (inside a ground-truth mask, or a confident pseudo mask, of class c); background (the
RoI pixels outside the mask) has one more. A pixel f of label y is trained with the cross-entropy
of softmax_k(<f, P_k> / T) towards y: pulled to its own prototype, pushed from the others
(intra-class compactness, inter-class dispersion). Anchors are sampled per label, a fraction of
them the hardest (least similar to their own prototype), the rest at random.

Prototypes are updated from detached features after the loss is taken. Under
torch.distributed the per-label sums and counts are summed over all processes first, so every
process holds the same prototypes.
"""
from typing import Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


class PrototypeBank(nn.Module):
    """``num_labels`` prototypes of ``dim`` channels (buffers, so checkpoints keep them); a label's
    prototype counts only once some pixel of it was seen (``initialized``)."""

    def __init__(self, num_labels: int, dim: int, momentum: float = 0.99):
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"prototype momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum
        self.register_buffer("prototypes", torch.zeros(num_labels, dim))
        self.register_buffer("initialized", torch.zeros(num_labels, dtype=torch.bool))

    @torch.no_grad()
    def update(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """``features`` P x D pixels (normalised here), ``labels`` P in [0, num_labels): each seen
        label's prototype becomes normalise(m P + (1 - m) mean), or the mean when new."""
        num = self.prototypes.shape[0]
        features = F.normalize(features.detach().to(self.prototypes.dtype), dim=1)
        sums = self.prototypes.new_zeros(num, features.shape[1]).index_add_(0, labels, features)
        counts = self.prototypes.new_zeros(num).index_add_(0, labels, torch.ones_like(labels, dtype=self.prototypes.dtype))
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(sums)
            dist.all_reduce(counts)
        seen = counts > 0
        means = F.normalize(sums[seen] / counts[seen, None], dim=1)
        old = self.prototypes[seen]
        blended = torch.where(self.initialized[seen, None], self.momentum * old + (1 - self.momentum) * means, means)
        self.prototypes[seen] = F.normalize(blended, dim=1)
        self.initialized |= seen


def sample_anchor_pixels(
    features: torch.Tensor,
    labels: torch.Tensor,
    prototypes: torch.Tensor,
    usable: torch.Tensor,
    per_label: int,
    hard_fraction: float = 0.5,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Indices of at most ``per_label`` anchors for each label whose prototype is ``usable``:
    ceil(hard_fraction * k) the least similar to their own prototype, the rest at random among
    the remaining pixels of that label."""
    similarity = (F.normalize(features.detach(), dim=1) * prototypes[labels]).sum(1)
    chosen = []
    for label in torch.unique(labels).tolist():
        if not usable[label]:
            continue
        members = torch.nonzero(labels == label, as_tuple=True)[0]
        k = min(per_label, len(members))
        num_hard = min(k, int(-(-k * hard_fraction // 1)))
        order = torch.argsort(similarity[members])
        hard, rest = members[order[:num_hard]], members[order[num_hard:]]
        picks = torch.randperm(len(rest), generator=generator, device="cpu")[: k - num_hard].to(rest.device)
        chosen += [hard, rest[picks]]
    return torch.cat(chosen) if chosen else labels.new_zeros(0)


def prototype_contrast_loss(features: torch.Tensor, labels: torch.Tensor, prototypes: torch.Tensor, usable: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Mean over the P anchor pixels of -log softmax_k(<f, P_k> / T)[y] with f normalised, over the
    ``usable`` prototypes only (the others are not yet defined). 0 (in the graph) without anchors."""
    if len(labels) == 0:
        return features.sum() * 0
    logits = F.normalize(features, dim=1) @ prototypes.t().to(features.dtype) / temperature
    logits = logits.masked_fill(~usable[None], float("-inf"))
    return F.cross_entropy(logits, labels)
