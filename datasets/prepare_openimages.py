#!/usr/bin/env python
"""Convert Open Images instance segmentation to COCO instances (RLE) for the open-vocabulary split.

    python datasets/prepare_openimages.py [--root DIR] [--subset train|validation] [--annotations base|all]
        [--masks-csv FILE] [--class-descriptions FILE] [--masks DIR] [--images DIR] [--workers N] [--output FILE]

--root defaults to $DETECTRON2_DATASETS/openimages. Defaults for the inputs (see datasets/README.md):
  ROOT/annotations/challenge-2019-<subset>-segmentation-masks.csv
  ROOT/annotations/challenge-2019-classes-description-segmentable.csv
  ROOT/masks/<subset>/*.png          (the 16 mask zips of the subset, unzipped together)
  ROOT/<subset>/<ImageID>.jpg
Only the 300 classes of datasets/metadata/openimages_ovis_vocabulary.json are kept; --annotations
base (default for train) keeps the base classes of openimages_ovis_split.json, all (default for
validation) every split class. Writes ROOT/annotations/ovis/instances_<subset>_<annotations>.json
and reports rows of other classes and missing/unreadable images and masks (skipped, not fatal).
"""
import argparse
import logging
import os
import sys

from xpseudo.data.metadata_files import metadata_file
from xpseudo.data.openimages import check_vocabulary, convert_openimages, read_class_descriptions
from xpseudo.data.split import OvisSplit
from xpseudo.utils.io import InputError, atomic_write_json, load_json


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=os.path.join(os.environ.get("DETECTRON2_DATASETS", "datasets"), "openimages"))
    parser.add_argument("--subset", choices=("train", "validation"), default="train")
    parser.add_argument("--annotations", choices=("base", "all"), help="default: base for train, all for validation")
    parser.add_argument("--masks-csv")
    parser.add_argument("--class-descriptions")
    parser.add_argument("--masks")
    parser.add_argument("--images")
    parser.add_argument("--vocabulary", default=metadata_file("openimages_ovis_vocabulary.json"))
    parser.add_argument("--split", default=metadata_file("openimages_ovis_split.json"))
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes reading masks")
    parser.add_argument("--output")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    keep = args.annotations or ("base" if args.subset == "train" else "all")
    annotations_dir = os.path.join(args.root, "annotations")
    masks_csv = args.masks_csv or os.path.join(annotations_dir, f"challenge-2019-{args.subset}-segmentation-masks.csv")
    descriptions_file = args.class_descriptions or os.path.join(annotations_dir, "challenge-2019-classes-description-segmentable.csv")
    output = args.output or os.path.join(annotations_dir, "ovis", f"instances_{args.subset}_{keep}.json")
    try:
        categories = load_json(args.vocabulary, "vocabulary file")
        split = OvisSplit.from_file(args.split)
        split.check_classes([c["name"] for c in categories], args.vocabulary)
        check_vocabulary(categories, args.vocabulary, read_class_descriptions(descriptions_file), descriptions_file)
        wanted = set(split.base if keep == "base" else split.names)
        data, counts = convert_openimages(
            masks_csv, args.masks or os.path.join(args.root, "masks", args.subset), args.images or os.path.join(args.root, args.subset),
            categories, [c["id"] for c in categories if c["name"] in wanted], workers=args.workers,
        )
    except InputError as e:
        sys.exit(f"error: {e}")
    if not data["annotations"]:
        sys.exit(f"error: no mask of {masks_csv} converted ({counts}); nothing written")
    atomic_write_json(output, data)
    print(f"{output}: {counts['images']} images, {counts['annotations']} masks ({keep} classes) from {counts['rows']} rows")
    print("skipped: " + ", ".join(f"{counts[k]} {k.replace('_', ' ')}" for k in (
        "other_classes", "missing_images", "unreadable_images", "masks_of_unusable_images", "missing_masks", "unreadable_masks", "empty_masks")))


if __name__ == "__main__":
    main()
