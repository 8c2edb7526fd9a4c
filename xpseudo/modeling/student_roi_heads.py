"""ROI heads of the XPM student: pseudo objects' class and box losses weighted by mask uncertainty."""
from typing import Dict, List, Optional

import torch
from detectron2.config import configurable
from detectron2.layers import cat
from detectron2.modeling import ROI_HEADS_REGISTRY
from detectron2.structures import Instances
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage
from fvcore.nn import smooth_l1_loss

from xpseudo.losses.noise_aware import (
    SIGNAL_WEIGHTINGS,
    WEIGHTINGS,
    class_relative_signal,
    class_signal_sums,
    object_means,
    pseudo_loss_weights,
    signal_loss_weights,
    updated_class_means,
)

from .roi_heads import OpenVocabROIHeads

WEIGHTING_CHOICES = WEIGHTINGS + SIGNAL_WEIGHTINGS + ("none",)


@ROI_HEADS_REGISTRY.register()
class StudentROIHeads(OpenVocabROIHeads):
    """OpenVocabROIHeads for training on ground truth plus pseudo labels (``gt_pseudo`` on the
    targets). The mask head runs first, so each foreground proposal of a pseudo object has its
    predicted mean sigma (``mask_sigma``, from ``NoiseAwareMaskHead``) before the box losses: a
    pseudo proposal's classification and box losses are multiplied by ``pseudo_weight * w``:
    "object" / "batch", w from sigma (``xpseudo.losses.pseudo_loss_weights``); "agreement", the
    IoU of the student's mask with the pseudo mask on the object's proposals; "class_probability",
    the student's (detached) probability of the pseudo class there; "agreement_probability", their
    product; "class_probability_relative" / "agreement_probability_relative", the probability or
    the product over its running mean among pseudo objects of the same class (``class_momentum``,
    summed over all processes each iteration; at most ``relative_weight_max``) -- these blended
    with 1 over the first ``weight_warmup_iters`` iterations (``xpseudo.losses.signal_loss_weights``);
    "none": w = 1. With ``weight_mask_loss`` the same w also scales the pseudo object's mask loss.
    Ground-truth and background proposals keep weight 1. Inference is OpenVocabROIHeads'."""

    @configurable
    def __init__(self, *, weighting: str = "object", weight_scale: float = 1.0, pseudo_weight: float = 1.0, weight_warmup_iters: int = 0,
                 class_momentum: float = 0.9, relative_weight_max: float = 2.0, weight_mask_loss: bool = False, **kwargs):
        super().__init__(**kwargs)
        if weighting not in WEIGHTING_CHOICES:
            raise ValueError(f"MODEL.XPM.STUDENT.WEIGHTING must be one of {WEIGHTING_CHOICES}, got {weighting!r}")
        predictor = self.box_predictor
        if predictor.box_reg_loss_type != "smooth_l1" or predictor.use_sigmoid_ce or predictor.use_fed_loss:
            raise ValueError("the student's weighted box losses support softmax classification and smooth_l1 box regression only")
        self.weighting, self.weight_scale, self.pseudo_weight = weighting, weight_scale, pseudo_weight
        if weight_warmup_iters < 0:
            raise ValueError(f"MODEL.XPM.STUDENT.WEIGHT_WARMUP_ITERS must be >= 0, got {weight_warmup_iters}")
        self.weight_warmup_iters = weight_warmup_iters
        if not 0 <= class_momentum < 1:
            raise ValueError(f"MODEL.XPM.STUDENT.CLASS_MEAN_MOMENTUM must be in [0, 1), got {class_momentum}")
        if relative_weight_max < 1:
            raise ValueError(f"MODEL.XPM.STUDENT.RELATIVE_WEIGHT_MAX must be >= 1, got {relative_weight_max}")
        self.class_momentum, self.relative_weight_max = class_momentum, relative_weight_max
        if weight_mask_loss and not hasattr(getattr(self, "mask_head", None), "reduce_instance_losses"):
            raise ValueError("MODEL.XPM.STUDENT.WEIGHT_MASK_LOSS needs MODEL.ROI_MASK_HEAD.NAME 'NoiseAwareMaskHead'")
        self.weight_mask_loss = weight_mask_loss
        # running mean signal per class for the "_relative" weightings (NaN: not seen yet); not
        # saved with the model: after a resume it is rebuilt within a few iterations
        self.register_buffer("class_signal_means", torch.full((self.num_classes,), float("nan")), persistent=False)

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        student = cfg.MODEL.XPM.STUDENT
        ret.update(weighting=student.WEIGHTING, weight_scale=student.WEIGHT_SCALE, pseudo_weight=student.PSEUDO_LOSS_WEIGHT,
                   weight_warmup_iters=student.WEIGHT_WARMUP_ITERS, class_momentum=student.CLASS_MEAN_MOMENTUM,
                   relative_weight_max=student.RELATIVE_WEIGHT_MAX, weight_mask_loss=student.WEIGHT_MASK_LOSS)
        return ret

    def forward(self, images, features, proposals, targets=None):
        if not self.training:
            return super().forward(images, features, proposals, targets)
        for image_targets in targets:  # object ids, so proposals of one object share its weight
            image_targets.gt_object = torch.arange(len(image_targets), device=image_targets.gt_classes.device)
            if not image_targets.has("gt_pseudo"):
                image_targets.gt_pseudo = torch.zeros(len(image_targets), dtype=torch.bool, device=image_targets.gt_classes.device)
        proposals = self.label_and_sample_proposals(proposals, targets)
        del targets
        losses = self._forward_student_mask(features, proposals)
        box_losses, weights = self._weighted_box_losses(features, proposals)
        losses.update(box_losses)
        if self.weight_mask_loss:
            losses["loss_mask"] = self._weighted_mask_loss(losses["loss_mask"], proposals, weights)
        return proposals, losses

    def _forward_student_mask(self, features: Dict[str, torch.Tensor], proposals: List[Instances]) -> Dict[str, torch.Tensor]:
        """Mask losses on the foreground proposals; their ``mask_sigma``, ``mask_agreement`` and
        ``mask_instance_loss`` are copied back onto ``proposals`` (NaN for background; none of
        them when the batch has no foreground proposal)."""
        foreground = [(p.gt_classes >= 0) & (p.gt_classes != self.num_classes) for p in proposals]
        instances = [p[f] for p, f in zip(proposals, foreground)]
        pooled = self.mask_pooler([features[f] for f in self.mask_in_features], [x.proposal_boxes for x in instances])
        losses = self.mask_head(pooled, instances)
        for p, f, x in zip(proposals, foreground, instances):
            for name in ("mask_sigma", "mask_agreement", "mask_instance_loss"):
                if x.has(name):  # out of place: the loss keeps its graph
                    values = torch.full((len(p),), float("nan"), device=p.gt_classes.device, dtype=x.get(name).dtype)
                    p.set(name, values.index_put((f,), x.get(name)))
        return losses

    def _weighted_mask_loss(self, loss_mask: torch.Tensor, proposals: List[Instances], weights: torch.Tensor) -> torch.Tensor:
        """The mask loss again, each foreground proposal's own loss times its weight (1 for ground
        truth), reduced as the mask head reduces it; ``loss_mask`` (the unweighted one) stays in the
        graph with weight 0, so every parameter it reached still gets a gradient under DDP."""
        if not any(p.has("mask_instance_loss") for p in proposals):
            return loss_mask  # no foreground proposal in this batch
        gt_classes = cat([p.gt_classes for p in proposals])
        foreground = (gt_classes >= 0) & (gt_classes != self.num_classes)
        per_instance = cat([p.mask_instance_loss for p in proposals])[foreground]
        pseudo = cat([_field(p, "gt_pseudo", torch.bool) for p in proposals])[foreground]
        head = self.mask_head
        return head.reduce_instance_losses(per_instance * weights[foreground], pseudo) * head.loss_weight + loss_mask * 0

    def proposal_weights(self, proposals: List[Instances], scores: Optional[torch.Tensor] = None) -> torch.Tensor:
        """One loss weight per sampled proposal (see the class docstring); ``scores``: the box
        predictor's class logits of the proposals (for "class_probability")."""
        device = self.box_predictor.projection.weight.device
        weights = torch.ones(sum(len(p) for p in proposals), device=device)
        relative = self.weighting.endswith("_relative")
        gt_classes = cat([p.gt_classes for p in proposals]) if proposals else torch.zeros(0, dtype=torch.long, device=device)
        flagged = cat([_field(p, "gt_pseudo", torch.bool) for p in proposals]) if proposals else gt_classes.bool()
        pseudo = flagged & (gt_classes >= 0) & (gt_classes != self.num_classes)
        if not pseudo.any():
            if relative:  # every process joins the class means' reduction, with or without pseudo objects
                self._update_class_means(weights[:0], gt_classes[:0])
            return weights
        if self.weighting == "none":
            weights[pseudo] = self.pseudo_weight
        else:
            # object ids unique across the batch: image index * (largest id + 1) + id
            ids = [_field(p, "gt_object", torch.long) for p in proposals]
            stride = max(int(x.max()) + 1 if len(x) else 1 for x in ids)
            objects = cat([x + i * stride for i, x in enumerate(ids)])
            if self.weighting in WEIGHTINGS:
                sigma = cat([p.mask_sigma for p in proposals])
                weights[pseudo] = self.pseudo_weight * pseudo_loss_weights(sigma[pseudo], objects[pseudo], self.weighting, self.weight_scale)
            else:
                signal = torch.ones_like(weights[pseudo])
                if self.weighting.startswith("agreement"):
                    signal = signal * cat([p.mask_agreement for p in proposals])[pseudo]
                if "probability" in self.weighting:
                    probabilities = torch.softmax(scores.detach()[pseudo], dim=1)
                    signal = signal * probabilities.gather(1, gt_classes[pseudo, None])[:, 0]
                signal = object_means(signal, objects[pseudo])
                if relative:
                    first = _first_of_each(objects[pseudo])  # one entry per object in the class means
                    self._update_class_means(signal[first], gt_classes[pseudo][first])
                    signal = class_relative_signal(signal, gt_classes[pseudo], self.class_signal_means, self.relative_weight_max)
                iteration = get_event_storage().iter
                warmup = 1.0 if self.weight_warmup_iters == 0 else min(iteration / self.weight_warmup_iters, 1.0)
                weights[pseudo] = self.pseudo_weight * signal_loss_weights(signal, None, warmup)
        get_event_storage().put_scalar("noise_aware/pseudo_box_weight", weights[pseudo].mean().item())
        return weights.detach()

    def _update_class_means(self, signal: torch.Tensor, classes: torch.Tensor) -> None:
        """Fold one signal per pseudo object of this process's batch into the running class means,
        summed over processes so that every process weights alike."""
        if self.class_signal_means.numel() != self.num_classes:  # the vocabulary changed
            self.class_signal_means = torch.full((self.num_classes,), float("nan"), device=self.class_signal_means.device)
        sums = class_signal_sums(signal, classes, self.num_classes)
        if comm.get_world_size() > 1:
            torch.distributed.all_reduce(sums)
        self.class_signal_means = updated_class_means(self.class_signal_means, sums, self.class_momentum)

    def _weighted_box_losses(self, features: Dict[str, torch.Tensor], proposals: List[Instances]):
        """The classification and box losses, and the per-proposal weights they used."""
        pooled = self.box_pooler([features[f] for f in self.box_in_features], [x.proposal_boxes for x in proposals])
        scores, deltas = self.box_predictor(self.box_head(pooled))
        del pooled
        weights = self.proposal_weights(proposals, scores)
        gt_classes = cat([p.gt_classes for p in proposals])
        num = max(gt_classes.numel(), 1)  # detectron2 normalises both losses by all sampled proposals
        loss_cls = self.box_predictor.classification_loss(scores, gt_classes, weights)
        foreground = (gt_classes >= 0) & (gt_classes != self.num_classes)
        predictor = self.box_predictor
        proposal_boxes = cat([p.proposal_boxes.tensor for p in proposals])
        gt_boxes = cat([(p.gt_boxes if p.has("gt_boxes") else p.proposal_boxes).tensor for p in proposals])
        target_deltas = predictor.box2box_transform.get_deltas(proposal_boxes[foreground], gt_boxes[foreground])
        per_box = smooth_l1_loss(deltas[foreground], target_deltas, predictor.smooth_l1_beta, reduction="none").sum(1)
        loss_box_reg = (per_box * weights[foreground]).sum() / num
        weight = predictor.loss_weight
        losses = {"loss_cls": loss_cls * weight.get("loss_cls", 1.0), "loss_box_reg": loss_box_reg * weight.get("loss_box_reg", 1.0)}
        return losses, weights


def _field(proposals: Instances, name: str, dtype) -> torch.Tensor:
    """A gt field of sampled proposals; images without targets have none (all background)."""
    if proposals.has(name):
        return proposals.get(name)
    return torch.zeros(len(proposals), dtype=dtype, device=proposals.gt_classes.device)


def _first_of_each(ids: torch.Tensor) -> torch.Tensor:
    """Index of the first occurrence of each distinct id."""
    unique, inverse = torch.unique(ids, return_inverse=True)
    positions = torch.arange(len(ids), device=ids.device)
    return torch.full((len(unique),), len(ids), device=ids.device, dtype=torch.long).scatter_reduce_(0, inverse, positions, reduce="amin")
