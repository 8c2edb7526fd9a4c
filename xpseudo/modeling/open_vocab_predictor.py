"""Open-vocabulary box predictor: region feature -> text space -> cosine with class embeddings."""
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers
from torch import nn


class OpenVocabOutputLayers(FastRCNNOutputLayers):
    """FastRCNNOutputLayers whose classifier is ``cos(project(x), class embedding) / T`` with a
    learned background embedding (last column, detectron2's convention). Box regression is
    class-agnostic. Class embeddings are a non-persistent buffer, set with
    ``set_class_embeddings``: checkpoints hold no vocabulary and run with any."""

    @configurable
    def __init__(self, input_shape: ShapeSpec, *, embedding_dim: int, temperature: float, **kwargs):
        kwargs["cls_agnostic_bbox_reg"] = True
        super().__init__(input_shape, num_classes=1, **kwargs)
        del self.cls_score
        input_size = input_shape.channels * (input_shape.width or 1) * (input_shape.height or 1)
        self.projection = nn.Linear(input_size, embedding_dim)
        self.background_embedding = nn.Parameter(torch.randn(embedding_dim) / embedding_dim**0.5)
        self.temperature = temperature
        self.register_buffer("class_embeddings", torch.zeros(0, embedding_dim), persistent=False)
        self.num_classes = 0

    @classmethod
    def from_config(cls, cfg, input_shape, embedding_dim):
        args = super().from_config(cfg, input_shape)
        args.update(embedding_dim=embedding_dim, temperature=cfg.MODEL.XPM.CLS_TEMPERATURE)
        del args["num_classes"], args["cls_agnostic_bbox_reg"]
        return args

    def set_class_embeddings(self, embeddings: torch.Tensor) -> None:
        self.class_embeddings = F.normalize(embeddings.to(self.projection.weight), dim=-1)
        self.num_classes = embeddings.shape[0]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised region embeddings in the text space."""
        return F.normalize(self.projection(x.flatten(start_dim=1)), dim=-1)

    def forward(self, x):
        x = x.flatten(start_dim=1)
        embeddings = self.embed(x)
        classifier = torch.cat([self.class_embeddings, F.normalize(self.background_embedding, dim=0)[None]])
        scores = embeddings @ classifier.t() / self.temperature
        return scores, self.bbox_pred(x)
