from .trainer import EVALUATORS, XPMTrainer

__all__ = ["EVALUATORS", "XPMTrainer"]
