#!/usr/bin/env python
"""Draw pseudo labels on their images: mask, class, the caption word that named it, and score.

    python tools/visualize_pseudo_labels.py --pseudo out/pl/pseudo_labels.json \\
        --image-root datasets/shapes/images/train --output out/pl/vis [--num 20] [--scale 4]

Writes OUTPUT/<image file name stem>.png for the first NUM images of the file.
"""
import argparse
import os
import sys
from collections import defaultdict

import cv2
import numpy as np
import pycocotools.mask as mask_util

from xpseudo.utils.io import InputError, load_json, require_keys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pseudo", required=True, help="pseudo_labels.json from tools/generate_pseudo_labels.py")
    parser.add_argument("--image-root", required=True, help="folder the file names in --pseudo are relative to")
    parser.add_argument("--output", required=True)
    parser.add_argument("--num", type=int, default=20, help="images to draw (0: all)")
    parser.add_argument("--scale", type=float, default=1.0, help="draw at this multiple of the image size")
    args = parser.parse_args(argv)

    from detectron2.utils.visualizer import ColorMode, Visualizer

    try:
        data = load_json(args.pseudo, "pseudo-label file")
        for key in ("images", "annotations", "categories"):
            require_keys(args.pseudo, data, (key,), "the file")
        names = {c["id"]: c["name"] for c in data["categories"]}
        per_image = defaultdict(list)
        for i, ann in enumerate(data["annotations"]):
            require_keys(args.pseudo, ann, ("image_id", "category_id", "segmentation"), f"annotations[{i}]")
            if ann["category_id"] not in names:
                raise InputError(args.pseudo, f"annotations[{i}] has category_id {ann['category_id']}, not among the categories")
            per_image[ann["image_id"]].append(ann)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    images = data["images"][: args.num] if args.num > 0 else data["images"]
    os.makedirs(args.output, exist_ok=True)
    written = 0
    for image in images:
        path = os.path.join(args.image_root, image["file_name"])
        bgr = cv2.imread(path, cv2.IMREAD_COLOR)
        if bgr is None:
            print(f"warning: cannot read {path}; skipped", file=sys.stderr)
            continue
        annotations = sorted(per_image[image["id"]], key=lambda a: -a.get("score", 0))
        masks = [_decode(a["segmentation"]) for a in annotations]
        labels = [f"{names[a['category_id']]}" + (f" ({a['word']})" if a.get("word") and a["word"] != names[a["category_id"]] else "")
                  + (f" {a['score']:.2f}" if "score" in a else "") for a in annotations]
        visualizer = Visualizer(bgr[:, :, ::-1], scale=args.scale, instance_mode=ColorMode.IMAGE)
        drawn = visualizer.overlay_instances(masks=np.stack(masks) if masks else None, labels=labels or None)
        name = os.path.splitext(os.path.basename(image["file_name"]))[0] + ".png"
        cv2.imwrite(os.path.join(args.output, name), drawn.get_image()[:, :, ::-1])
        written += 1
    print(f"wrote {written} images to {args.output}")
    return 0


def _decode(rle: dict) -> np.ndarray:
    counts = rle["counts"]
    return mask_util.decode({"size": rle["size"], "counts": counts.encode() if isinstance(counts, str) else counts})


if __name__ == "__main__":
    from xpseudo.utils.user_errors import run_reporting_user_errors

    sys.exit(run_reporting_user_errors(main))
