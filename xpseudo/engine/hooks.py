"""Training hooks of xpseudo's trainer."""
from detectron2.engine import HookBase


class DropFrozenGradients(HookBase):
    """After backward, clear the gradients of the parameters the model reports frozen right now.

    A part that stops training mid-run (the student's sigma branch) cannot leave the graph under
    DistributedDataParallel, which expects a gradient for every parameter it was built with; it
    stays in with a zero gradient instead. SGD would still move such a parameter (momentum, weight
    decay), but it skips one whose gradient is None, which is what this hook makes it. Modules
    declare what is frozen with a ``frozen_parameters()`` method.
    """

    def __init__(self, model):
        core = model.module if hasattr(model, "module") else model
        self._modules = [m for m in core.modules() if callable(getattr(m, "frozen_parameters", None))]

    def after_backward(self):
        for module in self._modules:
            for parameter in module.frozen_parameters():
                parameter.grad = None
