#!/usr/bin/env python
"""Make the open-vocabulary COCO files (OVR-CNN 48/17 split) from COCO 2017.

    python datasets/prepare_coco_ovis.py [--coco-root DIR] [--output DIR] [--split FILE]

Reads DIR/annotations/{instances_train2017,instances_val2017,captions_train2017}.json
(--coco-root defaults to $DETECTRON2_DATASETS/coco) and writes to --output
(default DIR/annotations/ovis), with the 65 split classes listed in every file:
  instances_train2017_base.json  base-class annotations only; images without one dropped
  instances_train2017_all.json   all 65 classes (to measure pseudo-label quality)
  instances_val2017.json         all 65 classes (generalized and constrained evaluation)
  captions_train2017.json        the captions, checked
"""
import argparse
import os
import sys

from xpseudo.data.captions import load_coco_captions
from xpseudo.data.metadata_files import metadata_file
from xpseudo.data.split import OvisSplit
from xpseudo.utils.io import InputError, atomic_write_json, load_json, require_keys


def restrict(data: dict, path: str, split: OvisSplit, keep: str) -> dict:
    """COCO instances limited to the split's classes; ``keep`` = "base" (and drop images without a
    base annotation) or "all"."""
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise InputError(path, f"not a COCO instances file: no {key!r} list")
    for i, c in enumerate(data["categories"]):
        require_keys(path, c, ("id", "name"), f"categories[{i}]")
    split.check_classes([c["name"] for c in data["categories"]], path)
    wanted = set(split.base if keep == "base" else split.names)
    categories = [c for c in data["categories"] if c["name"] in set(split.names)]
    kept_ids = {c["id"] for c in categories if c["name"] in wanted}
    annotations = []
    for i, ann in enumerate(data["annotations"]):
        require_keys(path, ann, ("image_id", "category_id"), f"annotations[{i}]")
        if ann["category_id"] in kept_ids:
            annotations.append(ann)
    images = data["images"]
    if keep == "base":
        with_base = {a["image_id"] for a in annotations}
        images = [im for im in images if im["id"] in with_base]
    return {"images": images, "annotations": annotations, "categories": categories}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--coco-root", default=os.path.join(os.environ.get("DETECTRON2_DATASETS", "datasets"), "coco"))
    parser.add_argument("--output", help="default: COCO_ROOT/annotations/ovis")
    parser.add_argument("--split", default=metadata_file("coco_ovis_split.json"))
    args = parser.parse_args(argv)
    source = os.path.join(args.coco_root, "annotations")
    output = args.output or os.path.join(source, "ovis")
    try:
        split = OvisSplit.from_file(args.split)
        train_path = os.path.join(source, "instances_train2017.json")
        train = load_json(train_path, "COCO instances file")
        jobs = [
            ("instances_train2017_base.json", restrict(train, train_path, split, "base")),
            ("instances_train2017_all.json", restrict(train, train_path, split, "all")),
        ]
        del train
        val_path = os.path.join(source, "instances_val2017.json")
        jobs.append(("instances_val2017.json", restrict(load_json(val_path, "COCO instances file"), val_path, split, "all")))
        captions_path = os.path.join(source, "captions_train2017.json")
        images, captions = load_coco_captions(captions_path)
    except InputError as e:
        sys.exit(f"error: {e}")
    caption_annotations = [
        {"id": i + 1, "image_id": image_id, "caption": text}
        for i, (image_id, text) in enumerate((k, t) for k, texts in captions.items() for t in texts)
    ]
    jobs.append(("captions_train2017.json", {"images": images, "annotations": caption_annotations}))
    for name, data in jobs:
        atomic_write_json(os.path.join(output, name), data)
        print(f"{os.path.join(output, name)}: {len(data['images'])} images, {len(data['annotations'])} annotations")


if __name__ == "__main__":
    main()
