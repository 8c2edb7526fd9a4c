"""Noise-aware mask head of the XPM student (registered in ROI_MASK_HEAD_REGISTRY)."""
from typing import List

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, ConvTranspose2d, cat
from detectron2.modeling.roi_heads.mask_head import ROI_MASK_HEAD_REGISTRY, MaskRCNNConvUpsampleHead, mask_rcnn_inference
from detectron2.structures import Instances
from detectron2.utils.events import get_event_storage
from torch import nn

from xpseudo.losses.noise_aware import noise_aware_mask_loss, sigma_from_log_variance


@ROI_MASK_HEAD_REGISTRY.register()
class NoiseAwareMaskHead(MaskRCNNConvUpsampleHead):
    """detectron2's conv-upsample mask head plus a sigma branch: a per-pixel log-variance predicted
    from the detached conv features, so the uncertainty never reshapes the mask features.

    Training: ground-truth instances get plain BCE on the logits; pseudo instances
    (``gt_pseudo`` True) the noise-aware loss (``xpseudo.losses.noise_aware``). Each instance's
    mean sigma is stored as ``mask_sigma`` on its proposal for the re-weighting of the box losses.

    Under DistributedDataParallel every trainable parameter must be part of every step's graph, on
    every rank. So the sigma branch always enters the loss (with weight zero on a batch without
    pseudo instances), and after ``sigma_freeze_iter`` it stays in the graph with a zero gradient;
    ``frozen_parameters()`` then names its weights, and the trainer's
    ``xpseudo.engine.hooks.DropFrozenGradients`` clears their gradients before the optimizer step,
    so neither momentum nor weight decay moves them. Without the noise-aware loss the branch is
    never trained (its parameters do not require gradients).
    """

    @configurable
    def __init__(self, input_shape, *, noise_aware: bool = True, num_samples: int = 8, sigma_freeze_iter: int = -1,
                 sigma_init: float = -2.0, **kwargs):
        super().__init__(input_shape, **kwargs)
        conv_dim = self.deconv.in_channels
        self.sigma = nn.Sequential(
            Conv2d(conv_dim, conv_dim, kernel_size=3, padding=1, activation=F.relu),
            ConvTranspose2d(conv_dim, conv_dim, kernel_size=2, stride=2),
            nn.ReLU(),
            Conv2d(conv_dim, 1, kernel_size=1),
        )
        for layer in (self.sigma[0], self.sigma[1]):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(layer.bias)
        nn.init.zeros_(self.sigma[3].weight)  # start with the same sigma everywhere
        nn.init.constant_(self.sigma[3].bias, sigma_init)
        self.noise_aware, self.num_samples, self.sigma_freeze_iter = noise_aware, num_samples, sigma_freeze_iter
        if not noise_aware:  # the plain-BCE ablation only reads sigma for the box-loss weights
            self.sigma.requires_grad_(False)

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        noise = cfg.MODEL.XPM.STUDENT
        ret.update(noise_aware=noise.NOISE_AWARE, num_samples=noise.NUM_SAMPLES, sigma_freeze_iter=noise.SIGMA_FREEZE_ITER, sigma_init=noise.SIGMA_INIT)
        return ret

    def layers(self, x):
        """Mask logits and per-pixel log-variance (both N x 1 x M x M for a class-agnostic head)."""
        for name, layer in self.named_children():
            if name == "deconv":
                features = x
            if name != "sigma":
                x = layer(x)
        log_variance = self.sigma(features.detach())
        if self.training and self.sigma_frozen():
            log_variance = zero_gradient(log_variance)
        return x, log_variance

    def sigma_frozen(self) -> bool:
        return self.sigma_freeze_iter >= 0 and get_event_storage().iter >= self.sigma_freeze_iter

    def frozen_parameters(self) -> List[nn.Parameter]:
        """Parameters in this step's graph that must not change now (the sigma branch once frozen)."""
        if self.training and self.noise_aware and self.sigma_frozen():
            return list(self.sigma.parameters())
        return []

    def forward(self, x, instances: List[Instances]):
        logits, log_variance = self.layers(x)
        if not self.training:
            mask_rcnn_inference(logits, instances)
            return instances
        return {"loss_mask": self.loss(logits[:, 0], log_variance[:, 0], instances) * self.loss_weight}

    def loss(self, logits: torch.Tensor, log_variance: torch.Tensor, instances: List[Instances]) -> torch.Tensor:
        side = logits.shape[-1]
        targets, pseudo = [], []
        for image in instances:
            if len(image) == 0:
                continue
            targets.append(image.gt_masks.crop_and_resize(image.proposal_boxes.tensor, side).to(logits.device))
            pseudo.append(image.gt_pseudo if image.has("gt_pseudo") else torch.zeros(len(image), dtype=torch.bool, device=logits.device))
        # zero-weight terms keep every parameter in the graph on every rank (see the class docstring)
        in_graph = log_variance.sum() * 0 if self.noise_aware else 0
        if not targets:
            return logits.sum() * 0 + in_graph
        targets, pseudo = cat(targets).to(logits.dtype), cat(pseudo)
        per_instance = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").flatten(1).mean(1)
        if self.noise_aware and pseudo.any():
            noisy = noise_aware_mask_loss(logits[pseudo], log_variance[pseudo], targets[pseudo], self.num_samples)
            per_instance = per_instance.masked_scatter(pseudo, noisy)
        sigma = sigma_from_log_variance(log_variance.detach()).flatten(1).mean(1)
        start = 0
        for image in instances:  # each proposal's mean sigma, for the box-loss weights
            image.mask_sigma = sigma[start : start + len(image)]
            start += len(image)
        storage = get_event_storage()
        if pseudo.any():
            storage.put_scalar("noise_aware/pseudo_sigma", sigma[pseudo].mean().item())
        if (~pseudo).any():
            storage.put_scalar("noise_aware/gt_sigma", sigma[~pseudo].mean().item())
        return (per_instance.mean() if per_instance.numel() else logits.sum() * 0) + in_graph


class _ZeroGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return torch.zeros_like(grad)


def zero_gradient(x: torch.Tensor) -> torch.Tensor:
    """``x`` unchanged, still in the autograd graph, passing back a zero gradient (not
    ``0 * grad``, which would turn an infinite upstream gradient into NaN)."""
    return _ZeroGradient.apply(x)
