"""What a trained student says about given objects (a pseudo-label file's): the per-object signals a
pseudo-loss weight can be made from, measured on each object's own box."""
from typing import Dict

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.structures import BitMasks, Boxes

from xpseudo.losses.noise_aware import mask_agreement, sigma_from_log_variance

SIGNALS = ("inverse_sigma", "mask_agreement", "class_probability", "mask_loss")


@torch.no_grad()
def object_signals(model, image: torch.Tensor, boxes: np.ndarray, classes: np.ndarray, masks: np.ndarray) -> Dict[str, np.ndarray]:
    """For N objects of one image -- ``image`` C x H x W as the model takes it (already resized),
    ``boxes`` N x 4 XYXY in that image's pixels, ``classes`` N contiguous class indices, ``masks``
    N x H x W bool at the same size -- the student's view of each object, its box taken as the
    proposal (as the training pairs a pseudo object with the proposals around it):

    - inverse_sigma: 1 / mean sigma of the noise-aware head over the box's M x M mask grid;
    - mask_agreement: IoU of the student's mask (logit > 0) with the object's mask on that grid;
    - class_probability: the student's softmax probability of the object's class;
    - mask_loss: mean BCE of the student's mask logits against the object's mask on that grid.
    """
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        images = model.preprocess_image([{"image": image.to(device)}])
        features = model.backbone(images.tensor)
        heads = model.roi_heads
        box_list = [Boxes(torch.as_tensor(boxes, dtype=torch.float32, device=device).reshape(-1, 4))]
        pooled = heads.box_pooler([features[f] for f in heads.box_in_features], box_list)
        scores, _ = heads.box_predictor(heads.box_head(pooled))
        labels = torch.as_tensor(classes, dtype=torch.long, device=device)
        probability = torch.softmax(scores, dim=1).gather(1, labels[:, None])[:, 0]
        pooled = heads.mask_pooler([features[f] for f in heads.mask_in_features], box_list)
        logits, log_variance, _ = heads.mask_head.layers(pooled)
        side = logits.shape[-1]
        targets = BitMasks(torch.as_tensor(masks, dtype=torch.bool)).crop_and_resize(box_list[0].tensor.cpu(), side).to(device)
        logits, log_variance = logits[:, 0], log_variance[:, 0]
        values = {
            "inverse_sigma": 1.0 / sigma_from_log_variance(log_variance).flatten(1).mean(1),
            "mask_agreement": mask_agreement(logits, targets),
            "class_probability": probability,
            "mask_loss": F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none").flatten(1).mean(1),
        }
        return {name: value.cpu().numpy().astype(np.float64) for name, value in values.items()}
    finally:
        model.train(was_training)
