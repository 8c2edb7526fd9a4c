"""Mask head of the XPM student (registered in ROI_MASK_HEAD_REGISTRY): the noise-aware loss or
another pseudo-mask loss, and optionally pixel-to-prototype contrast on its mask features."""
from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, ConvTranspose2d, cat
from detectron2.modeling.roi_heads.mask_head import ROI_MASK_HEAD_REGISTRY, MaskRCNNConvUpsampleHead, mask_rcnn_inference
from detectron2.structures import Instances
from detectron2.utils.events import get_event_storage
from torch import nn

from xpseudo.losses.noise_aware import mask_agreement, noise_aware_mask_loss, sigma_from_log_variance
from xpseudo.losses.prototype_contrast import PrototypeBank, prototype_contrast_loss, sample_anchor_pixels
from xpseudo.losses.pseudo_mask import MASK_LOSSES, confidence_guided_mask_loss, response_scaling_mask_loss


SIGMA_BRANCHES = ("conv_deconv", "linear")
MASK_LOSS_MEANS = ("all", "per_source")


@ROI_MASK_HEAD_REGISTRY.register()
class NoiseAwareMaskHead(MaskRCNNConvUpsampleHead):
    """detectron2's conv-upsample mask head plus a sigma branch: a per-pixel log-variance predicted
    from detached features, so the uncertainty never reshapes the mask features. ``sigma_branch``
    "conv_deconv": a 3x3 conv, its own deconvolution and a 1x1 conv on the features before the
    deconvolution, the last layer starting at zero (sigma the same everywhere); "linear" (the
    authors' release): one 1x1 conv on the features after it, weights N(0, 0.001^2).

    Training: ground-truth instances get plain BCE on the logits; pseudo instances (``gt_pseudo``
    True) the loss ``mask_loss`` names (``xpseudo.losses.MASK_LOSSES``): "noise_aware"
    (``xpseudo.losses.noise_aware``), "bce", "confidence_guided" (pixels in the pseudo label's
    ``gt_uncertain`` band are ignored) or "response_scaling". Each instance's mean sigma is stored
    as ``mask_sigma`` on its proposal for the re-weighting of the box losses (without the
    noise-aware loss sigma is never trained: the same for every instance), the IoU of its
    predicted mask with its target as ``mask_agreement``, and its own loss (in the graph) as
    ``mask_instance_loss``, so the ROI heads can weight it (``reduce_instance_losses``).

    With ``prototype_weight`` > 0 the mask features (after the deconvolution) are also contrasted
    with one prototype per training class and one for background (``loss_prototype``;
    ``xpseudo.losses.prototype_contrast``): pixels inside a ground-truth mask, or a pseudo mask
    outside its uncertain band (``prototype_pseudo``), belong to its class, the RoI's other pixels
    to background. ``size_prototypes`` sets the number of classes once the model knows them.

    Under DistributedDataParallel every trainable parameter must be part of every step's graph, on
    every rank. So the sigma branch always enters the loss (with weight zero on a batch without
    pseudo instances), and after ``sigma_freeze_iter`` it stays in the graph with a zero gradient;
    ``frozen_parameters()`` then names its weights, and the trainer's
    ``xpseudo.engine.hooks.DropFrozenGradients`` clears their gradients before the optimizer step,
    so neither momentum nor weight decay moves them. The prototype update is a collective (sums
    over processes) made on every step, whatever the batch holds.
    """

    @configurable
    def __init__(self, input_shape, *, noise_aware: bool = True, num_samples: int = 8, sigma_freeze_iter: int = -1,
                 sigma_init: float = -2.0, sigma_branch: str = "conv_deconv", mask_loss_means: str = "all", mask_loss: str = "noise_aware", response_scales: Sequence[float] = (0.25, 4.0),
                 prototype_weight: float = 0.0, prototype_temperature: float = 0.1, prototype_momentum: float = 0.99,
                 prototype_pixels: int = 256, prototype_hard_fraction: float = 0.5, prototype_pseudo: bool = True, **kwargs):
        super().__init__(input_shape, **kwargs)
        if mask_loss not in MASK_LOSSES:
            raise ValueError(f"MODEL.XPM.STUDENT.MASK_LOSS must be one of {MASK_LOSSES}, got {mask_loss!r}")
        if not noise_aware:  # the older spelling of the plain-BCE ablation
            if mask_loss not in ("noise_aware", "bce"):
                raise ValueError(f"MODEL.XPM.STUDENT.NOISE_AWARE False means MASK_LOSS bce; it contradicts MASK_LOSS {mask_loss!r}")
            mask_loss = "bce"
        if sigma_branch not in SIGMA_BRANCHES:
            raise ValueError(f"MODEL.XPM.STUDENT.SIGMA_BRANCH must be one of {SIGMA_BRANCHES}, got {sigma_branch!r}")
        self.sigma_branch = sigma_branch
        if mask_loss_means not in MASK_LOSS_MEANS:
            raise ValueError(f"MODEL.XPM.STUDENT.MASK_LOSS_MEANS must be one of {MASK_LOSS_MEANS}, got {mask_loss_means!r}")
        self.mask_loss_means = mask_loss_means
        if sigma_branch == "linear":  # the authors': one 1x1 conv on the mask features
            self.sigma = Conv2d(self.deconv.out_channels, 1, kernel_size=1)
            nn.init.normal_(self.sigma.weight, std=0.001)
            last = self.sigma
        else:
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
            last = self.sigma[3]
            nn.init.zeros_(last.weight)  # start with the same sigma everywhere
        nn.init.constant_(last.bias, sigma_init)
        self.mask_loss, self.response_scales = mask_loss, tuple(response_scales)
        self.noise_aware = mask_loss == "noise_aware"
        self.num_samples, self.sigma_freeze_iter = num_samples, sigma_freeze_iter
        if not self.noise_aware:  # other losses only read sigma for the box-loss weights
            self.sigma.requires_grad_(False)
        self.prototype_weight, self.prototype_temperature = prototype_weight, prototype_temperature
        self.prototype_pixels, self.prototype_hard_fraction = prototype_pixels, prototype_hard_fraction
        self.prototype_pseudo, self.prototype_momentum = prototype_pseudo, prototype_momentum
        self.prototypes: Optional[PrototypeBank] = None
        if prototype_weight > 0:
            self.size_prototypes(1)

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        noise = cfg.MODEL.XPM.STUDENT
        contrast = cfg.MODEL.XPM.PROTOTYPE_CONTRAST
        ret.update(
            noise_aware=noise.NOISE_AWARE, num_samples=noise.NUM_SAMPLES, sigma_freeze_iter=noise.SIGMA_FREEZE_ITER,
            sigma_init=noise.SIGMA_INIT, sigma_branch=noise.SIGMA_BRANCH,
            mask_loss_means=noise.MASK_LOSS_MEANS, mask_loss=noise.MASK_LOSS, response_scales=noise.RESPONSE_SCALES,
            prototype_weight=contrast.WEIGHT, prototype_temperature=contrast.TEMPERATURE,
            prototype_momentum=contrast.MOMENTUM, prototype_pixels=contrast.PIXELS_PER_CLASS,
            prototype_hard_fraction=contrast.HARD_FRACTION, prototype_pseudo=contrast.PSEUDO,
        )
        return ret

    def size_prototypes(self, num_classes: int) -> None:
        """One prototype per class plus background (index ``num_classes``); a no-op without the
        contrast or when already of that size."""
        if self.prototype_weight <= 0 or (self.prototypes is not None and self.prototypes.prototypes.shape[0] == num_classes + 1):
            return
        device = self.predictor.weight.device
        self.prototypes = PrototypeBank(num_classes + 1, self.deconv.out_channels, self.prototype_momentum).to(device)

    def layers(self, x):
        """Mask logits and per-pixel log-variance (both N x 1 x M x M for a class-agnostic head),
        and the mask features the logits are predicted from (N x C x M x M)."""
        for name, layer in self.named_children():
            if name == "deconv":
                features = x
            if name == "predictor":
                pixels = x
            if name not in ("sigma", "prototypes"):
                x = layer(x)
        log_variance = self.sigma((pixels if self.sigma_branch == "linear" else features).detach())
        if self.training and self.sigma_frozen():
            log_variance = zero_gradient(log_variance)
        return x, log_variance, pixels

    def sigma_frozen(self) -> bool:
        return self.sigma_freeze_iter >= 0 and get_event_storage().iter >= self.sigma_freeze_iter

    def frozen_parameters(self) -> List[nn.Parameter]:
        """Parameters in this step's graph that must not change now (the sigma branch once frozen)."""
        if self.training and self.noise_aware and self.sigma_frozen():
            return list(self.sigma.parameters())
        return []

    def forward(self, x, instances: List[Instances]):
        logits, log_variance, pixels = self.layers(x)
        if not self.training:
            mask_rcnn_inference(logits, instances)
            return instances
        targets = mask_targets(instances, logits.shape[-1], logits.device)
        losses = {"loss_mask": self.loss(logits[:, 0], log_variance[:, 0], instances, targets) * self.loss_weight}
        if self.prototypes is not None:
            losses["loss_prototype"] = self.prototype_weight * self._contrast(pixels, targets)
        return losses

    def loss(self, logits: torch.Tensor, log_variance: torch.Tensor, instances: List[Instances], targets: Optional["MaskTargets"] = None) -> torch.Tensor:
        """The mask loss of N instances' M x M logits (GT: BCE; pseudo: ``mask_loss``): their mean
        ("all"), or the mean over pseudo instances plus the mean over ground-truth ones
        (``mask_loss_means`` "per_source"); sets each instance's ``mask_sigma``."""
        if targets is None:
            targets = mask_targets(instances, logits.shape[-1], logits.device)
        # zero-weight terms keep every parameter in the graph on every rank (see the class docstring)
        in_graph = log_variance.sum() * 0 if self.noise_aware else 0
        if len(targets.masks) == 0:
            return logits.sum() * 0 + in_graph
        masks, pseudo = targets.masks.to(logits.dtype), targets.pseudo
        per_instance = F.binary_cross_entropy_with_logits(logits, masks, reduction="none").flatten(1).mean(1)
        if pseudo.any() and self.mask_loss != "bce":
            pseudo_loss = self._pseudo_mask_loss(logits[pseudo], log_variance[pseudo], masks[pseudo], targets.uncertain[pseudo], targets.banded[pseudo])
            per_instance = per_instance.masked_scatter(pseudo, pseudo_loss)
        sigma = sigma_from_log_variance(log_variance.detach()).flatten(1).mean(1)
        agreement = mask_agreement(logits, masks)
        start = 0
        for image in instances:  # each proposal's mean sigma, mask agreement and loss, for the per-object weights
            image.mask_sigma = sigma[start : start + len(image)]
            image.mask_agreement = agreement[start : start + len(image)]
            image.mask_instance_loss = per_instance[start : start + len(image)]
            start += len(image)
        storage = get_event_storage()
        if pseudo.any():
            storage.put_scalar("noise_aware/pseudo_sigma", sigma[pseudo].mean().item())
        if (~pseudo).any():
            storage.put_scalar("noise_aware/gt_sigma", sigma[~pseudo].mean().item())
        return self.reduce_instance_losses(per_instance, pseudo) + in_graph

    def reduce_instance_losses(self, per_instance: torch.Tensor, pseudo: torch.Tensor) -> torch.Tensor:
        """The batch's mask loss from N per-instance losses, as ``mask_loss_means`` says (without
        ``loss_weight``)."""
        if self.mask_loss_means == "per_source":  # the authors' two passes: one mean each, summed
            return sum(per_instance[part].mean() for part in (pseudo, ~pseudo) if part.any())
        return per_instance.mean()

    def _pseudo_mask_loss(self, logits, log_variance, targets, uncertain, banded) -> torch.Tensor:
        if self.mask_loss == "noise_aware":
            return noise_aware_mask_loss(logits, log_variance, targets, self.num_samples)
        if self.mask_loss == "response_scaling":
            return response_scaling_mask_loss(logits, targets, self.response_scales)
        if not banded.all():
            raise ValueError(
                "MODEL.XPM.STUDENT.MASK_LOSS confidence_guided needs pseudo labels with 'uncertain_segmentation' "
                "(make them with XPM.PSEUDO_LABELS.UNCERTAIN_BAND set)"
            )
        return confidence_guided_mask_loss(logits, targets, uncertain)

    def _contrast(self, pixels: torch.Tensor, targets: "MaskTargets") -> torch.Tensor:
        """The prototype contrast of this step's mask-feature pixels, then the prototype update
        (on every process, every step, whatever the batch holds: it sums over processes)."""
        background = self.prototypes.prototypes.shape[0] - 1
        flat = pixels.permute(0, 2, 3, 1).reshape(-1, pixels.shape[1])
        labels = torch.where(targets.masks, targets.classes.clamp(max=background)[:, None, None], background).flatten()
        usable = ~targets.uncertain
        if not self.prototype_pseudo:
            usable = usable & ~targets.pseudo[:, None, None]
        usable = usable.flatten()
        flat, labels = flat[usable], labels[usable]
        bank = self.prototypes
        anchors = sample_anchor_pixels(flat, labels, bank.prototypes, bank.initialized, self.prototype_pixels, self.prototype_hard_fraction)
        # copies: the loss keeps the prototypes for its backward, and the update below is in place
        loss = prototype_contrast_loss(flat[anchors], labels[anchors], bank.prototypes.clone(), bank.initialized.clone(), self.prototype_temperature)
        bank.update(flat, labels)
        return loss


@dataclass
class MaskTargets:
    """Per foreground instance (N, all images): its target mask and uncertain pixels cropped to
    its proposal (N x M x M bool), whether it is pseudo, whether its label has an uncertain band,
    and its class."""

    masks: torch.Tensor
    uncertain: torch.Tensor
    pseudo: torch.Tensor
    banded: torch.Tensor
    classes: torch.Tensor


def mask_targets(instances: List[Instances], side: int, device) -> MaskTargets:
    parts = {name: [] for name in ("masks", "uncertain", "pseudo", "banded", "classes")}
    for image in instances:
        n = len(image)
        if n == 0:
            continue
        boxes = image.proposal_boxes.tensor
        masks = image.gt_masks.crop_and_resize(boxes, side).to(device)
        has_band = image.has("gt_uncertain")
        parts["masks"].append(masks)
        parts["uncertain"].append(image.gt_uncertain.crop_and_resize(boxes, side).to(device) if has_band else torch.zeros_like(masks))
        parts["pseudo"].append(image.gt_pseudo if image.has("gt_pseudo") else torch.zeros(n, dtype=torch.bool, device=device))
        parts["banded"].append(torch.full((n,), has_band, dtype=torch.bool, device=device))
        parts["classes"].append(image.gt_classes)
    if not parts["masks"]:
        empty = torch.zeros(0, side, side, dtype=torch.bool, device=device)
        none = torch.zeros(0, dtype=torch.bool, device=device)
        return MaskTargets(empty, empty, none, none, torch.zeros(0, dtype=torch.long, device=device))
    return MaskTargets(**{name: cat(values).bool() if name != "classes" else cat(values) for name, values in parts.items()})


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
