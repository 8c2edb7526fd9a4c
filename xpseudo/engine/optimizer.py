"""detectron2's optimizer, with one more gradient clip: SOLVER.CLIP_GRADIENTS.CLIP_TYPE
"full_model" caps the norm of all trained parameters' gradients taken together
(torch.nn.utils.clip_grad_norm_ over the model, as the authors' stage 1 does). detectron2's own
"norm" caps each parameter tensor's norm separately, and "value" each element."""
import torch
from detectron2.solver import build_optimizer

FULL_MODEL = "full_model"


def build_clipped_optimizer(cfg, model: torch.nn.Module) -> torch.optim.Optimizer:
    clip = cfg.SOLVER.CLIP_GRADIENTS
    if not (clip.ENABLED and clip.CLIP_TYPE == FULL_MODEL):
        return build_optimizer(cfg, model)
    plain = cfg.clone()
    plain.defrost()
    plain.SOLVER.CLIP_GRADIENTS.ENABLED = False  # detectron2 does not know "full_model"
    optimizer = build_optimizer(plain, model)
    return clip_whole_model(optimizer, clip.CLIP_VALUE, clip.NORM_TYPE)


def clip_whole_model(optimizer: torch.optim.Optimizer, max_norm: float, norm_type: float = 2.0) -> torch.optim.Optimizer:
    """``optimizer``, its ``step`` first clipping the gradients of all its parameters together to
    ``max_norm``. The class is swapped (not wrapped) so that schedulers and checkpoints see the
    optimizer they expect."""
    base = type(optimizer)

    def step(self, closure=None):
        parameters = [p for group in self.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(parameters, max_norm, norm_type)
        return base.step(self, closure)

    optimizer.__class__ = type(base.__name__ + "WithFullModelClip", (base,), {"step": step})
    return optimizer
