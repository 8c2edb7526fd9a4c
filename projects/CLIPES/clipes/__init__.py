"""CLIP-ES as an xpseudo pseudo-labeler (projects/CLIPES): class maps from a frozen CLIP by softmax
GradCAM, refined by the ViT's attention affinity, turned into instances.

The map math (``grad_cam``, ``affinity``, ``instances``, ``clip_model``) needs no detectron2;
``config``, ``labeler`` and ``generate`` do and are imported by name.
"""
from .affinity import map_box, patch_affinity, refine_maps
from .clip_model import build_clip, class_embeddings, encode_phrases
from .grad_cam import ViTPass, attention_weights, softmax_grad_cam, vit_pass
from .instances import Region, class_regions, mask_iou, snap_to_teacher

__all__ = [
    "map_box",
    "patch_affinity",
    "refine_maps",
    "build_clip",
    "class_embeddings",
    "encode_phrases",
    "ViTPass",
    "attention_weights",
    "softmax_grad_cam",
    "vit_pass",
    "Region",
    "class_regions",
    "mask_iou",
    "snap_to_teacher",
]
