#!/usr/bin/env python
"""xpseudo: cross-modal pseudo-labeling (XPM) for open-vocabulary instance segmentation.

detectron2 is not on PyPI; install it yourself first (see README.md).
"""
from setuptools import find_packages, setup

setup(
    name="xpseudo",
    version="0.1.0",
    description="XPM cross-modal pseudo-labeling for open-vocabulary instance segmentation on detectron2",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # projects/CLIPES's package too, so its tool and the tests import it from anywhere
    packages=find_packages(include=["xpseudo", "xpseudo.*"]) + ["clipes"],
    package_dir={"clipes": "projects/CLIPES/clipes"},
    install_requires=[
        "torch",
        "torchvision",
        "fvcore",
        "iopath",
        "open_clip_torch",
        "lvis",
        "pycocotools",
        "opencv-python",
        "submitit",
        "scipy",
        "tqdm",
        "pyyaml",
    ],
    # onnx / onnxruntime: tools/export_model.py --format onnx and its check
    extras_require={"dev": ["pytest", "pytest-xdist", "hypothesis", "onnx", "onnxruntime"], "export": ["onnx", "onnxruntime"]},
)
