"""tools/export_model.py: TorchScript / ONNX export of XPM models with their vocabulary baked in."""
from .exporter import FORMATS, OUTPUTS, compare, export, load_exported, preprocess, write_vocabulary

__all__ = ["FORMATS", "OUTPUTS", "compare", "export", "load_exported", "preprocess", "write_vocabulary"]
