"""A student training step against a plain detectron2 Mask R-CNN step: same backbone, same batches.

The plain model is detectron2's GeneralizedRCNN with StandardROIHeads, a softmax classifier over
the same classes and the standard mask head; the student adds the text-space classifier, the sigma
branch with sampled mask losses and the uncertainty weights. Both run forward, backward and an SGD
step on the same pre-loaded batches, alternating, so machine-load drift hits both alike.
"""
import itertools
import time
from typing import List

import torch
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from xpseudo.engine.hooks import DropFrozenGradients


def plain_mask_rcnn_cfg(student_cfg, num_classes: int):
    cfg = student_cfg.clone()
    cfg.defrost()
    cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    cfg.MODEL.ROI_HEADS.NAME = "StandardROIHeads"
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = num_classes
    cfg.MODEL.ROI_MASK_HEAD.NAME = "MaskRCNNConvUpsampleHead"
    return cfg


def _step_seconds(model, optimizer, batch, storage, after_backward) -> float:
    start = time.perf_counter()
    losses = model(batch)
    optimizer.zero_grad(set_to_none=True)
    sum(losses.values()).backward()
    after_backward()  # what XPMTrainer does between backward and step (drops frozen gradients)
    optimizer.step()
    storage.iter += 1
    return time.perf_counter() - start


def compare(student_cfg, loader, num_classes: int, steps: int = 20, warmup: int = 3) -> dict:
    batches: List[list] = list(itertools.islice(iter(loader), warmup + steps))
    models = {"student": build_model(student_cfg), "plain": build_model(plain_mask_rcnn_cfg(student_cfg, num_classes))}
    optimizers = {k: torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=1e-4, momentum=0.9) for k, m in models.items()}
    hooks = {k: DropFrozenGradients(m) for k, m in models.items()}
    seconds = {k: [] for k in models}
    with EventStorage(0) as storage:
        for index, batch in enumerate(batches):
            for name, model in models.items():
                model.train()
                took = _step_seconds(model, optimizers[name], batch, storage, hooks[name].after_backward)
                if index >= warmup:
                    seconds[name].append(took)
    median = {k: sorted(v)[len(v) // 2] for k, v in seconds.items()}
    return {"steps": steps, "images_per_batch": len(batches[0]), "student_step_s": median["student"],
            "plain_step_s": median["plain"], "ratio": median["student"] / median["plain"]}
