#!/usr/bin/env python
"""Per class, how many images' captions mention it; and the matching throughput.

    python tools/caption_stats.py --captions FILE --vocabulary FILE [--json-out OUT] [--no-synonyms]

OUT: {"per_image": {image_id: [class names]}, "counts": {class: images}, "captions_per_second": x}.
"""
import argparse
import sys
import time

from xpseudo.data.captions import load_coco_captions
from xpseudo.text import CaptionMatcher, Vocabulary
from xpseudo.utils.io import InputError, atomic_write_json


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--captions", required=True, help="COCO captions JSON")
    parser.add_argument("--vocabulary", required=True, help="vocabulary JSON, or a COCO/LVIS annotation file")
    parser.add_argument("--json-out")
    parser.add_argument("--no-synonyms", action="store_true", help="match class names only")
    args = parser.parse_args(argv)
    try:
        vocabulary = Vocabulary.from_file(args.vocabulary)
        _, captions = load_coco_captions(args.captions)
    except InputError as e:
        sys.exit(f"error: {e}")
    matcher = CaptionMatcher(vocabulary, use_synonyms=not args.no_synonyms)
    start = time.perf_counter()
    per_image = {image_id: matcher.classes_in(texts) for image_id, texts in captions.items()}
    elapsed = time.perf_counter() - start
    num_captions = sum(len(t) for t in captions.values())
    rate = num_captions / elapsed if elapsed > 0 else float("inf")
    counts = {c.name: 0 for c in vocabulary}
    for found in per_image.values():
        for index in found:
            counts[vocabulary[index].name] += 1
    width = max([len(n) for n in counts] + [5])
    print(f"{'class':<{width}}  images")
    for name, count in sorted(counts.items(), key=lambda kv: -kv[1]):
        print(f"{name:<{width}}  {count}")
    print(f"{num_captions} captions of {len(captions)} images matched in {elapsed:.3f}s: {rate:,.0f} captions/s")
    if args.json_out:
        names = {image_id: [vocabulary[i].name for i in found] for image_id, found in per_image.items()}
        atomic_write_json(args.json_out, {"per_image": names, "counts": counts, "captions_per_second": rate})


if __name__ == "__main__":
    from xpseudo.utils.user_errors import run_reporting_user_errors

    sys.exit(run_reporting_user_errors(main))
