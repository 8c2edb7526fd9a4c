"""Open-vocabulary box predictor: region feature -> text space -> cosine with class embeddings."""
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers
from torch import nn


LOSS_NORMALIZERS = ("class_weights", "rois")


class OpenVocabOutputLayers(FastRCNNOutputLayers):
    """FastRCNNOutputLayers whose classifier is ``cos(project(x), class embedding) / T`` with a
    learned background embedding (last column, detectron2's convention). Box regression is
    class-agnostic. Class embeddings are a non-persistent buffer, set with
    ``set_class_embeddings``: checkpoints hold no vocabulary and run with any.

    ``background_weight`` weights the background class in the classification cross-entropy (the
    authors' release: 0.2), as a per-class weight. ``loss_normalizer`` says what the weighted sum
    is divided by: "class_weights" (their sum: a weighted mean over proposals) or "rois" (the
    number of sampled proposals, the authors' release: with 40 foreground RoIs of 512 and weight
    0.2 the loss is 134.4 / 512 = 1 / 3.81 of the weighted mean)."""

    @configurable
    def __init__(self, input_shape: ShapeSpec, *, embedding_dim: int, temperature: float, background_weight: float = 1.0,
                 loss_normalizer: str = "class_weights", **kwargs):
        kwargs["cls_agnostic_bbox_reg"] = True
        super().__init__(input_shape, num_classes=1, **kwargs)
        del self.cls_score
        input_size = input_shape.channels * (input_shape.width or 1) * (input_shape.height or 1)
        self.projection = nn.Linear(input_size, embedding_dim)
        self.background_embedding = nn.Parameter(torch.randn(embedding_dim) / embedding_dim**0.5)
        self.temperature, self.background_weight = temperature, background_weight
        if loss_normalizer not in LOSS_NORMALIZERS:
            raise ValueError(f"MODEL.XPM.CLS_LOSS_NORMALIZER must be one of {LOSS_NORMALIZERS}, got {loss_normalizer!r}")
        self.loss_normalizer = loss_normalizer
        self.register_buffer("class_embeddings", torch.zeros(0, embedding_dim), persistent=False)
        self.num_classes = 0

    @classmethod
    def from_config(cls, cfg, input_shape, embedding_dim):
        args = super().from_config(cfg, input_shape)
        args.update(embedding_dim=embedding_dim, temperature=cfg.MODEL.XPM.CLS_TEMPERATURE, background_weight=cfg.MODEL.XPM.BACKGROUND_WEIGHT,
                    loss_normalizer=cfg.MODEL.XPM.CLS_LOSS_NORMALIZER)
        del args["num_classes"], args["cls_agnostic_bbox_reg"]
        return args

    def set_class_embeddings(self, embeddings: torch.Tensor) -> None:
        self.class_embeddings = F.normalize(embeddings.to(self.projection.weight), dim=-1)
        self.num_classes = embeddings.shape[0]

    def embed(self, x: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Region embeddings in the text space, L2-normalised unless ``normalize`` is False (the
        authors' pseudo-label pick uses them as projected)."""
        projected = self.projection(x.flatten(start_dim=1))
        return F.normalize(projected, dim=-1) if normalize else projected

    def forward(self, x):
        x = x.flatten(start_dim=1)
        embeddings = self.embed(x)
        classifier = torch.cat([self.class_embeddings, F.normalize(self.background_embedding, dim=0)[None]])
        scores = embeddings @ classifier.t() / self.temperature
        return scores, self.bbox_pred(x)

    def classification_loss(self, scores: torch.Tensor, gt_classes: torch.Tensor, proposal_weights=None) -> torch.Tensor:
        """Cross-entropy with the background class weighted by ``background_weight`` (and each
        proposal by ``proposal_weights``), divided as ``loss_normalizer`` says: detectron2's mean
        when both weights are 1."""
        if gt_classes.numel() == 0:
            return scores.sum() * 0.0
        per_proposal = F.cross_entropy(scores, gt_classes, reduction="none")
        class_weight = torch.where(gt_classes == scores.shape[1] - 1, self.background_weight, 1.0).to(scores.dtype)
        weight = class_weight if proposal_weights is None else class_weight * proposal_weights
        if self.loss_normalizer == "rois":
            return (per_proposal * weight).sum() / gt_classes.numel()
        # background weight 0 on a batch of background RoIs only: 0 / 0; the loss is 0 there
        return (per_proposal * weight).sum() / class_weight.sum().clamp(min=torch.finfo(scores.dtype).tiny)

    def losses(self, predictions, proposals):
        losses = super().losses(predictions, proposals)
        if self.background_weight != 1.0:  # otherwise detectron2's own loss, bit for bit (either normalizer)
            gt_classes = torch.cat([p.gt_classes for p in proposals]) if proposals else predictions[0].new_zeros(0, dtype=torch.long)
            losses["loss_cls"] = self.classification_loss(predictions[0], gt_classes) * self.loss_weight.get("loss_cls", 1.0)
        return losses
