#!/usr/bin/env python
"""COCO AP, AP50, AP75 for all / base / novel classes from one COCOeval pass.

    python tools/evaluate_ovis.py --gt GT.json --dt DT.json --split split.json [--iou-type segm|bbox] [--json-out OUT]

DT is a COCO results list or a COCO instances file whose annotations carry ``score``
(pseudo-label files are). OUT gets {"segm": {...}} or {"bbox": {...}}.
"""
import argparse
import sys

from xpseudo.data.split import OvisSplit
from xpseudo.evaluation import evaluate_by_split, format_split_table, load_coco_gt, load_detections
from xpseudo.utils.io import InputError, atomic_write_json


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gt", required=True, help="COCO instances ground truth")
    parser.add_argument("--dt", required=True, help="detections: COCO results list or instances file with scores")
    parser.add_argument("--split", required=True, help='{"base": [...], "novel": [...]}')
    parser.add_argument("--iou-type", choices=("segm", "bbox"), default="segm")
    parser.add_argument("--json-out", help="write the metrics here")
    args = parser.parse_args(argv)
    try:
        split = OvisSplit.from_file(args.split)
        coco_gt = load_coco_gt(args.gt)
        split.check_classes([c["name"] for c in coco_gt.dataset["categories"]], args.gt)
        detections = load_detections(args.dt, coco_gt, args.iou_type, gt_name=args.gt)
    except InputError as e:
        sys.exit(f"error: {e}")
    results = evaluate_by_split(coco_gt, detections, split, args.iou_type)
    print(f"{len(detections)} detections on {len(coco_gt.imgs)} images, {len(coco_gt.cats)} categories")
    print(format_split_table(results, args.iou_type))
    if args.json_out:
        atomic_write_json(args.json_out, {args.iou_type: results}, indent=2)
        print(f"wrote {args.json_out}")


if __name__ == "__main__":
    main()
