#!/usr/bin/env python
"""Write the synthetic captioned shapes dataset (xpseudo's built-in data; no downloads).

    python datasets/prepare_shapes.py [--output DIR] [--seed S] [--num-train N] [--num-val M] [--image-size PX]

DIR defaults to $DETECTRON2_DATASETS/shapes (./datasets/shapes if unset), where the builtin
registrations shapes_* look. Same seed -> byte-identical files.
"""
import argparse
import json
import os

from xpseudo.data.metadata_files import metadata_file
from xpseudo.data.split import OvisSplit
from xpseudo.data.synthetic_shapes import generate_shapes_dataset
from xpseudo.text.vocabulary import Vocabulary


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default=os.path.join(os.environ.get("DETECTRON2_DATASETS", "datasets"), "shapes"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-train", type=int, default=1000)
    parser.add_argument("--num-val", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--vocabulary", default=metadata_file("shapes_vocabulary.json"), help="classes and synonyms")
    parser.add_argument("--split", default=metadata_file("shapes_split.json"), help="base/novel class lists")
    args = parser.parse_args(argv)
    if args.num_train < 1 or args.num_val < 1 or args.image_size < 32:
        parser.error("--num-train and --num-val must be >= 1 and --image-size >= 32")
    counts = generate_shapes_dataset(
        args.output, Vocabulary.from_file(args.vocabulary), OvisSplit.from_file(args.split),
        seed=args.seed, num_train=args.num_train, num_val=args.num_val, image_size=args.image_size, progress=True,
    )
    print(f"wrote {args.output}: {json.dumps(counts)}")


if __name__ == "__main__":
    main()
