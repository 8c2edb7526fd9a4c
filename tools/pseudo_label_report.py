#!/usr/bin/env python
"""How good is a pseudo-label file? AP by base/novel split, precision and recall per class at an
IoU threshold, the confidence of right vs wrong pseudo instances, and the worst images drawn
beside their ground truth, in one folder with an index.md linking them.

    python tools/pseudo_label_report.py --pseudo out/pseudo_labels/pseudo_labels.json \\
        --gt datasets/shapes/annotations/instances_train_all.json --split datasets/shapes/split.json \\
        --output out/report [--image-root datasets/shapes/images] [--iou-type segm|bbox] [--worst 8]

GT must hold the labeled images with every class annotated (on shapes, instances_train_all.json);
the report covers the images listed in the pseudo-label file.
"""
import argparse
import sys

from xpseudo.evaluation.pseudo_label_report import write_report


def iou_threshold(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"an IoU threshold is in (0, 1], got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"a count of images is 0 or more, got {text}")
    return value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pseudo", required=True, help="pseudo_labels.json (or a COCO results list)")
    parser.add_argument("--gt", required=True, help="COCO instances ground truth of the labeled images")
    parser.add_argument("--split", required=True, help='{"base": [...], "novel": [...]}')
    parser.add_argument("--output", required=True, help="folder for index.md, metrics.json, confidence.png, worst/")
    parser.add_argument("--iou-type", choices=("segm", "bbox"), default="segm")
    parser.add_argument("--iou-threshold", type=iou_threshold, default=0.5, help="a pseudo instance is right at this IoU with its class")
    parser.add_argument("--worst", type=non_negative_int, default=8, help="images drawn, most wrong + missed instances first")
    parser.add_argument("--image-root", help="folder the file names are relative to (needed to draw the worst images)")
    args = parser.parse_args(argv)
    metrics = write_report(args.pseudo, args.gt, args.split, args.output, args.iou_type, args.iou_threshold, args.worst, args.image_root)
    ap = metrics["ap"]
    print(f"{args.iou_type} AP50 all {ap['AP50']:.1f}  base {ap.get('AP50_base', float('nan')):.1f}  novel {ap.get('AP50_novel', float('nan')):.1f}")
    print(f"wrote {args.output}/index.md")
    return 0


if __name__ == "__main__":
    from xpseudo.utils.user_errors import run_reporting_user_errors

    sys.exit(run_reporting_user_errors(main))
