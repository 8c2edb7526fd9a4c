"""ROI heads with the open-vocabulary box predictor and a class-agnostic mask head."""
from typing import Dict, List, Tuple

import torch
from detectron2.config import configurable
from detectron2.modeling import ROI_HEADS_REGISTRY, StandardROIHeads
from detectron2.structures import Boxes

from .open_vocab_predictor import OpenVocabOutputLayers


@ROI_HEADS_REGISTRY.register()
class OpenVocabROIHeads(StandardROIHeads):
    """StandardROIHeads whose classes are whatever text embeddings were set last
    (``set_class_embeddings``); also gives region embeddings for arbitrary boxes (grounding and
    pseudo-labeling use them)."""

    @configurable
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(self.box_predictor, OpenVocabOutputLayers):
            raise TypeError("OpenVocabROIHeads needs an OpenVocabOutputLayers box predictor")

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        if cfg.MODEL.MASK_ON and not cfg.MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK:
            raise ValueError("open-vocabulary masks need MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK True")
        ret = super()._init_box_head(cfg, input_shape)
        ret["box_predictor"] = OpenVocabOutputLayers(cfg, ret["box_head"].output_shape, embedding_dim=cfg.MODEL.XPM.EMBEDDING_DIM)
        return ret

    def set_class_embeddings(self, embeddings: torch.Tensor) -> None:
        self.box_predictor.set_class_embeddings(embeddings)
        self.num_classes = embeddings.shape[0]  # background label used when sampling proposals

    def region_embeddings(self, features: Dict[str, torch.Tensor], boxes: List[Boxes]) -> torch.Tensor:
        """L2-normalised text-space embeddings of ``boxes`` (one Boxes per image), concatenated."""
        return self.region_embeddings_and_deltas(features, boxes)[0]

    def embed_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        """Region embeddings of features pooled elsewhere (the grounding's grid cells)."""
        return self.box_predictor.embed(self.box_head(pooled))

    def region_embeddings_and_deltas(self, features: Dict[str, torch.Tensor], boxes: List[Boxes],
                                     normalize: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
        """Region embeddings (normalised unless ``normalize`` is False) and the class-agnostic box
        regression deltas (N x 4) of ``boxes``."""
        pooled = self.box_pooler([features[f] for f in self.box_in_features], boxes)
        features = self.box_head(pooled)
        return self.box_predictor.embed(features, normalize), self.box_predictor.bbox_pred(features.flatten(start_dim=1))
