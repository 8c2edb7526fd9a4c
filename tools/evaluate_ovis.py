#!/usr/bin/env python
"""COCO AP, AP50, AP75 for all / base / novel classes from one COCOeval pass; LVIS AP with APr
(rare = novel), APc, APf when GT is an LVIS file.

    python tools/evaluate_ovis.py --gt GT.json --dt DT.json --split split.json [--iou-type segm|bbox] [--json-out OUT]
    python tools/evaluate_ovis.py --gt lvis_v1_val.json --dt DT.json [--iou-type segm|bbox] [--json-out OUT]

DT is a COCO results list or a COCO instances file whose annotations carry ``score``
(pseudo-label files are). OUT gets {"segm": {...}} or {"bbox": {...}}.
"""
import argparse
import sys

from xpseudo.data.split import OvisSplit
from xpseudo.evaluation import evaluate_by_split, format_split_table, load_coco_gt, load_detections
from xpseudo.evaluation.lvis_evaluation import LVIS_METRICS, evaluate_lvis, is_lvis
from xpseudo.utils.io import InputError, atomic_write_json


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gt", required=True, help="COCO instances ground truth")
    parser.add_argument("--dt", required=True, help="detections: COCO results list or instances file with scores")
    parser.add_argument("--split", help='{"base": [...], "novel": [...]} (not for LVIS: its frequency groups are the split)')
    parser.add_argument("--iou-type", choices=("segm", "bbox"), default="segm")
    parser.add_argument("--json-out", help="write the metrics here")
    args = parser.parse_args(argv)
    coco_gt = load_coco_gt(args.gt)
    lvis = is_lvis(coco_gt.dataset["categories"])
    if not lvis:
        if not args.split:
            raise InputError(args.gt, "not an LVIS file (no category 'frequency'), so --split is needed")
        split = OvisSplit.from_file(args.split)
        split.check_classes([c["name"] for c in coco_gt.dataset["categories"]], args.gt)
    detections = load_detections(args.dt, coco_gt, args.iou_type, gt_name=args.gt)
    print(f"{len(detections)} detections on {len(coco_gt.imgs)} images, {len(coco_gt.cats)} categories")
    if lvis:
        results = evaluate_lvis(args.gt, detections, args.iou_type)
        print(f"LVIS {args.iou_type}: " + "  ".join(f"{m} {results[m]:.2f}" for m in LVIS_METRICS))
    else:
        results = evaluate_by_split(coco_gt, detections, split, args.iou_type)
        print(format_split_table(results, args.iou_type))
    if args.json_out:
        atomic_write_json(args.json_out, {args.iou_type: results}, indent=2)
        print(f"wrote {args.json_out}")
    return 0


if __name__ == "__main__":
    from xpseudo.utils.user_errors import run_reporting_user_errors

    sys.exit(run_reporting_user_errors(main))
