#!/usr/bin/env python
"""Export a trained XPM model (teacher or student) to TorchScript or ONNX with a vocabulary baked in.

    python tools/export_model.py --config-file configs/shapes/xpm_student_R18_FPN.yaml --format torchscript \\
        --output exported/ --vocabulary "star,cross,crescent" --sample-image img.png --verify img.png other.png \\
        MODEL.WEIGHTS out/student/model_final.pth

Writes OUTPUT/model.ts (or model.onnx) and OUTPUT/vocabulary.json (the classes in output order, the
input format and sizes, the output names). The model is traced on --sample-image (default: the
first --verify image), which should show objects: tracing records the path that image takes.
--verify runs the eager model and the export on each image and prints the largest differences of
boxes (pixels), scores and mask probabilities; past --tolerance the tool exits with 1.
"""
import argparse
import re
import sys

from xpseudo.utils.io import InputError


CONFIG_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+$")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--format", choices=("torchscript", "onnx"), default="torchscript")
    parser.add_argument("--output", required=True, help="folder for model.ts / model.onnx and vocabulary.json")
    parser.add_argument("--vocabulary", help='"a,b,c" or a vocabulary file (default: the config\'s first test dataset\'s classes)')
    parser.add_argument("--sample-image", help="the image the model is traced on (default: the first --verify image)")
    parser.add_argument("--verify", nargs="+", default=[], metavar="IMG", help="compare eager and exported outputs on these images")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest accepted difference in --verify")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE pairs (MODEL.WEIGHTS ...)")
    args = parser.parse_args(argv)
    # "--verify a.png b.png MODEL.WEIGHTS w": the overrides start at the first config key
    key = next((i for i, v in enumerate(args.verify) if CONFIG_KEY.match(v)), None)
    if key is not None:
        args.opts = args.verify[key:] + args.opts
        args.verify = args.verify[:key]
    if not args.sample_image and not args.verify:
        parser.error("give --sample-image (or --verify images): the model is traced on a real image")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from xpseudo.export import compare, export, preprocess, write_vocabulary
    from xpseudo.export.exporter import worst
    from xpseudo.modeling.vocabulary import default_vocabulary
    from xpseudo.predict.cli import load_model
    from xpseudo.text.vocabulary import Vocabulary

    torch.set_grad_enabled(False)
    try:
        args.confidence_threshold = None
        cfg, model = load_model(args)
        vocabulary = Vocabulary.parse(args.vocabulary, "--vocabulary") if args.vocabulary else default_vocabulary(cfg)
        if vocabulary is None:
            raise InputError(args.config_file, "no --vocabulary, and the config's DATASETS.TEST names no classes")
        vocabulary = model.set_vocabulary(vocabulary, "the export vocabulary")
        images = {path: preprocess(cfg, path) for path in [args.sample_image or args.verify[0], *args.verify]}
    except (InputError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    path = export(model, cfg, images[args.sample_image or args.verify[0]], args.output, args.format)
    print(f"wrote {path} and {write_vocabulary(args.output, vocabulary, cfg)} ({len(vocabulary)} classes: {', '.join(vocabulary.names[:10])}"
          + (" ..." if len(vocabulary) > 10 else "") + ")")
    if not args.verify:
        return 0
    differences = compare(model, path, {p: images[p] for p in args.verify})
    for d in differences:
        print(f"{d.image}: {d.detections} detections (exported {d.exported_detections}), classes {'equal' if d.classes_equal else 'DIFFER'}; "
              f"largest difference: boxes {d.boxes:.2e} px, scores {d.scores:.2e}, mask probabilities {d.mask_probs:.2e}")
    largest = worst(differences)
    ok = all(d.classes_equal and d.detections == d.exported_detections for d in differences) and max(largest.values()) <= args.tolerance
    print(f"verify: largest difference boxes {largest['boxes']:.2e} px, scores {largest['scores']:.2e}, "
          f"mask probabilities {largest['mask_probs']:.2e} (tolerance {args.tolerance:g}): {'OK' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    from xpseudo.utils.user_errors import run_reporting_user_errors

    sys.exit(run_reporting_user_errors(main))
