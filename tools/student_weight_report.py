#!/usr/bin/env python
"""Which per-object weight tells a student's right pseudo objects from its wrong ones? For a trained
student and the pseudo-label file it learned from: each pseudo object is right when its mask
overlaps a ground-truth object of its class by IoU >= 0.5; each candidate weight (1 / mean sigma,
the teacher's confidence, the student's mask agreement, class probability, mask loss, products,
and the probability and a product over their class's mean) gets its AUROC at telling right from
wrong, for all, base and novel objects.

    python tools/student_weight_report.py --config-file configs/shapes/xpm_student_R18_FPN.yaml \\
        --pseudo out/pseudo_labels/pseudo_labels.json \\
        --gt datasets/shapes/annotations/instances_train_all.json --split datasets/shapes/split.json \\
        [--json-out out/weights.json] MODEL.WEIGHTS out/student/model_final.pth

The images are read from the labeled dataset's folder (the dataset provenance.json names), or
--image-root. Inference runs at the config's test size, on MODEL.DEVICE.
"""
import argparse
import os
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="the student's config")
    parser.add_argument("--pseudo", required=True, help="the pseudo_labels.json the student trained on")
    parser.add_argument("--gt", required=True, help="COCO instances of the labeled images with every class annotated")
    parser.add_argument("--split", required=True, help='{"base": [...], "novel": [...]}')
    parser.add_argument("--image-root", help="folder of the labeled images (default: the labeled dataset's)")
    parser.add_argument("--json-out", help="write the table (and the right / wrong counts) here")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE pairs (MODEL.WEIGHTS: the student)")
    args = parser.parse_args(argv)
    from xpseudo.evaluation.student_weight_report import student_weight_report

    report = student_weight_report(args.config_file, args.opts, args.pseudo, args.gt, args.split, args.image_root)
    print(report["text"])
    if args.json_out:
        from xpseudo.utils.io import atomic_write_json

        atomic_write_json(args.json_out, {k: v for k, v in report.items() if k != "text"}, indent=2)
        print(f"wrote {os.path.abspath(args.json_out)}")
    return 0


if __name__ == "__main__":
    from xpseudo.utils.user_errors import run_reporting_user_errors

    sys.exit(run_reporting_user_errors(main))
