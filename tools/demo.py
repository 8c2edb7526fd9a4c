#!/usr/bin/env python
"""Segment images with a vocabulary typed on the command line and draw the results.

    python tools/demo.py --config-file CFG --input IMG|DIR|GLOB [...] --output DIR --vocabulary "cat,zebra,kite" \
        [--confidence-threshold 0.5] [--opts MODEL.WEIGHTS model_final.pth ...]

Class embeddings for the vocabulary are computed with the config's text model and cached (or
picked from MODEL.XPM.TEXT_EMBEDDINGS files). Writes DIR/<image name>.png.
"""
import argparse
import os
import sys

import cv2
from detectron2.data.catalog import Metadata
from detectron2.data.detection_utils import read_image
from detectron2.engine import DefaultPredictor
from detectron2.utils.visualizer import ColorMode, Visualizer
from tqdm import tqdm

import xpseudo.data.builtin  # noqa: F401  the config's training dataset names the model's classes
import xpseudo.modeling  # noqa: F401
from xpseudo.config import load_config
from xpseudo.predict.inputs import resolve_input
from xpseudo.text import Vocabulary
from xpseudo.utils.io import InputError


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--input", nargs="+", required=True, help="image files, folders, glob patterns or .txt lists of images")
    parser.add_argument("--output", required=True, help="folder for the drawn images")
    parser.add_argument("--vocabulary", required=True, help='comma-separated class names ("cat,zebra") or a vocabulary file')
    parser.add_argument("--confidence-threshold", type=float, default=0.5)
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="config overrides: KEY VALUE ...")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        vocabulary = Vocabulary.parse(args.vocabulary, "--vocabulary")
        paths = sorted({r["file_name"] for source in args.input for r in resolve_input(source).records})
        cfg = load_config(args.config_file, args.opts, **{"MODEL.ROI_HEADS.SCORE_THRESH_TEST": args.confidence_threshold})
        cfg.freeze()
        predictor = DefaultPredictor(cfg)
        predictor.model.set_vocabulary(vocabulary, "--vocabulary")
    except InputError as e:
        sys.exit(f"error: {e}")
    metadata = Metadata(name="demo", thing_classes=vocabulary.names)
    os.makedirs(args.output, exist_ok=True)
    for path in tqdm(paths, desc="demo"):
        image = read_image(path, format="BGR")
        instances = predictor(image)["instances"].to("cpu")
        drawn = Visualizer(image[:, :, ::-1], metadata, instance_mode=ColorMode.IMAGE).draw_instance_predictions(instances)
        out = os.path.join(args.output, os.path.splitext(os.path.basename(path))[0] + ".png")
        cv2.imwrite(out, drawn.get_image()[:, :, ::-1])
        print(f"{path}: {len(instances)} instances -> {out}")


if __name__ == "__main__":
    from xpseudo.utils.user_errors import run_reporting_user_errors

    sys.exit(run_reporting_user_errors(main))
