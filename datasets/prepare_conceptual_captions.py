#!/usr/bin/env python
"""Make a COCO captions file from Conceptual Captions and the images you downloaded.

    python datasets/prepare_conceptual_captions.py [--root DIR] [--split train|val] [--tsv FILE]
        [--images DIR] [--naming img2dataset|index|url-sha1|PATTERN] [--workers N] [--output DIR]

--root defaults to $DETECTRON2_DATASETS/cc. Reads the released TSV (default ROOT/Train_GCC-training.tsv
for train, ROOT/Validation_GCC-1.1.0-Validation.tsv for val) and the images under --images (default
ROOT/images/<split>), named by --naming (default img2dataset: 00000/000000000.jpg, ...; a PATTERN
may use {index} (0-based TSV row), {shard} (index // --shard-size), {url_sha1}, {url_md5}).
Writes to --output (default ROOT/annotations):
  captions_<split>.json   COCO captions of the images that exist and decode (image id = row + 1)
  images_<split>.txt      their file names, one per line
and reports how many rows had no image or a corrupt one. Existing outputs are replaced only once
the new ones are complete.
"""
import argparse
import logging
import os
import sys

from xpseudo.data.conceptual_captions import NAMINGS, convert_conceptual_captions
from xpseudo.utils.io import InputError, atomic_write, atomic_write_json

TSV_NAMES = {"train": "Train_GCC-training.tsv", "val": "Validation_GCC-1.1.0-Validation.tsv"}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=os.path.join(os.environ.get("DETECTRON2_DATASETS", "datasets"), "cc"))
    parser.add_argument("--split", choices=sorted(TSV_NAMES), default="train")
    parser.add_argument("--tsv")
    parser.add_argument("--images")
    parser.add_argument("--naming", default="img2dataset", help=f"{', '.join(NAMINGS)} or a pattern")
    parser.add_argument("--shard-size", type=int, default=10000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes decoding images")
    parser.add_argument("--output")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    tsv = args.tsv or os.path.join(args.root, TSV_NAMES[args.split])
    images = args.images or os.path.join(args.root, "images", args.split)
    output = args.output or os.path.join(args.root, "annotations")
    pattern = NAMINGS.get(args.naming, args.naming)
    try:
        data, counts = convert_conceptual_captions(tsv, images, pattern, args.shard_size, args.workers)
    except (InputError, ValueError) as e:
        sys.exit(f"error: {e}")
    if not data["images"]:
        sys.exit(f"error: none of the {counts['rows']} rows of {tsv} has an image under {images} (naming {pattern!r}); nothing written")
    captions_path = os.path.join(output, f"captions_{args.split}.json")
    list_path = os.path.join(output, f"images_{args.split}.txt")
    atomic_write_json(captions_path, data)
    with atomic_write(list_path) as f:
        f.writelines(image["file_name"] + "\n" for image in data["images"])
    print(
        f"{captions_path}: {counts['images']} of {counts['rows']} rows written; {counts['missing']} images missing, "
        f"{counts['corrupt']} corrupt, {counts['empty_caption']} empty captions"
    )


if __name__ == "__main__":
    main()
