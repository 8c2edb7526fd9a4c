"""tools/predict.py: label images with a trained XPM model and a chosen vocabulary into COCO JSON.

``inputs`` resolves what to label (no detectron2); ``predictor`` runs the model over one shard;
``cli`` is the tool's command line, processes and merge."""
from .inputs import PredictInput, resolve_input

__all__ = ["PredictInput", "resolve_input"]
