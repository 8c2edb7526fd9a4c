"""Export an XPM model (teacher or student) with its vocabulary baked in: TorchScript by tracing, or
ONNX, on detectron2's ``TracingAdapter``; and the check that the export computes what the model does.

The exported graph takes one image, a 3 x H x W float tensor in ``INPUT.FORMAT`` channel order and
0-255 values, already resized as at test time (short side ``INPUT.MIN_SIZE_TEST``, long side at most
``INPUT.MAX_SIZE_TEST``), and returns, in this order (``OUTPUTS``):
boxes (N x 4, XYXY in the input's pixels), classes (N, indices into vocabulary.json), mask
probabilities (N x 1 x M x M, each over its box), scores (N) and the input's (height, width).
The class embeddings of the vocabulary are constants of the graph.
"""
import json
import os
import warnings
from typing import Dict, List, NamedTuple

import numpy as np
import torch
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.export import TracingAdapter

from xpseudo.utils.io import atomic_write, atomic_write_json

FORMATS = ("torchscript", "onnx")
# TracingAdapter flattens Instances by sorted field name, then the image size
OUTPUTS = ("boxes", "classes", "mask_probs", "scores", "image_size")
FILE_NAMES = {"torchscript": "model.ts", "onnx": "model.onnx"}
ONNX_OPSET = 17


def _inference(model, image):
    # no postprocessing: boxes in the input's pixels, masks per box (what a deployment pastes)
    return model.inference([{"image": image}], do_postprocess=False)[0]


def preprocess(cfg, path: str) -> torch.Tensor:
    """An image file as the exported model takes it (read and resized as at test time)."""
    image = utils.read_image(path, format=cfg.INPUT.FORMAT)
    resized = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST).get_transform(image).apply_image(image)
    return torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1))).float()


def export(model, cfg, sample: torch.Tensor, output_dir: str, fmt: str) -> str:
    """Write OUTPUT_DIR/model.ts or model.onnx traced on ``sample``; returns its path."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    model.eval()
    with torch.no_grad():
        if len(_inference(model, sample)) == 0:
            warnings.warn("the sample image gives no detection: the export is traced through the empty path only; "
                          "pass a --sample-image that shows objects of the vocabulary")
    adapter = TracingAdapter(model, sample, _inference).eval()  # the ONNX exporter restores the adapter's mode onto the model
    path = os.path.join(output_dir, FILE_NAMES[fmt])
    os.makedirs(output_dir, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        # the tracer notes each Python-side shape check it freezes; detectron2's are input-independent
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        if fmt == "torchscript":
            traced = torch.jit.trace(adapter, adapter.flattened_inputs, check_trace=False)
            with atomic_write(path, "wb") as f:
                torch.jit.save(traced, f)
        else:
            with atomic_write(path, "wb") as f:
                torch.onnx.export(adapter, adapter.flattened_inputs, f, dynamo=False, opset_version=ONNX_OPSET,
                                  input_names=["image"], output_names=list(OUTPUTS),
                                  dynamic_axes={"image": {1: "height", 2: "width"}, "boxes": {0: "n"}, "classes": {0: "n"},
                                                "mask_probs": {0: "n"}, "scores": {0: "n"}})
    return path


def write_vocabulary(output_dir: str, vocabulary, cfg) -> str:
    """OUTPUT_DIR/vocabulary.json: the classes in output order (itself a vocabulary file, usable as
    --vocabulary), and what the graph's input must be."""
    path = os.path.join(output_dir, "vocabulary.json")
    atomic_write_json(path, {
        "categories": vocabulary.to_json(),
        "prompts": list(vocabulary.prompts),
        "input": {"format": cfg.INPUT.FORMAT, "min_size_test": cfg.INPUT.MIN_SIZE_TEST, "max_size_test": cfg.INPUT.MAX_SIZE_TEST},
        "outputs": list(OUTPUTS),
    }, indent=2)
    return path


class Difference(NamedTuple):
    image: str
    detections: int
    exported_detections: int
    boxes: float  # largest absolute difference, pixels
    scores: float
    mask_probs: float
    classes_equal: bool


def load_exported(path: str):
    """A callable image -> tuple of output tensors, for a model.ts or model.onnx."""
    if path.endswith(".onnx"):
        import onnxruntime

        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        return lambda image: tuple(torch.from_numpy(np.asarray(v)) for v in session.run(None, {"image": image.numpy()}))
    import torchvision  # noqa: F401  registers the torchvision ops (roi_align, nms) the graph calls

    module = torch.jit.load(path)
    return lambda image: module(image)


def compare(model, exported_path: str, images: Dict[str, torch.Tensor]) -> List[Difference]:
    """Run the eager model and the export on each image; the largest differences per image."""
    run = load_exported(exported_path)
    model.eval()
    differences = []
    with torch.no_grad():
        for name, image in images.items():
            eager = _inference(model, image)
            boxes, classes, masks, scores, _ = run(image)
            n, m = len(eager), len(boxes)

            def largest(a, b):
                return float((a.float() - b.float()).abs().max()) if n == m and n else (0.0 if n == m else float("inf"))

            differences.append(Difference(
                name, n, m, largest(eager.pred_boxes.tensor, boxes), largest(eager.scores, scores), largest(eager.pred_masks, masks),
                n == m and bool((eager.pred_classes == classes.to(eager.pred_classes.dtype)).all())))
    return differences


def worst(differences: List[Difference]) -> dict:
    return {key: max((getattr(d, key) for d in differences), default=0.0) for key in ("boxes", "scores", "mask_probs")}


def summary_json(differences: List[Difference]) -> str:
    return json.dumps([d._asdict() for d in differences], indent=2)
