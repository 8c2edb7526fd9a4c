#!/usr/bin/env python
"""Write the LVIS v1 vocabulary and open-vocabulary split under datasets/metadata/.

    python datasets/make_lvis_metadata.py --lvis-json $DETECTRON2_DATASETS/lvis/lvis_v1_val.json [--output-dir DIR]

From the categories of an LVIS v1 annotation file (train and val list the same 1203):
  lvis_v1_vocabulary.json   [{"id", "name", "synonyms", "frequency"}] in id order
  lvis_v1_ovis_split.json   base = frequent + common, novel = rare (LVIS's own frequency groups)
"""
import argparse
import os
import sys

from xpseudo.data.metadata_files import METADATA_DIR
from xpseudo.utils.io import InputError, atomic_write, load_json, require_keys

FREQUENCIES = {"f": "base", "c": "base", "r": "novel"}


def lvis_metadata(path: str):
    """(vocabulary entries, split) from the ``categories`` of an LVIS annotation file."""
    data = load_json(path, "LVIS annotation file")
    categories = data.get("categories") if isinstance(data, dict) else None
    if not isinstance(categories, list) or not categories:
        raise InputError(path, "no 'categories' list: not an LVIS annotation file")
    vocabulary, split = [], {"base": [], "novel": []}
    for i, c in enumerate(sorted(categories, key=lambda c: c.get("id", 0))):
        require_keys(path, c, ("id", "name", "synonyms", "frequency"), f"categories[{i}]")
        if c["frequency"] not in FREQUENCIES:
            raise InputError(path, f"categories[{i}] ({c['name']!r}): frequency {c['frequency']!r} is not one of 'f', 'c', 'r'")
        vocabulary.append({"id": c["id"], "name": c["name"], "synonyms": list(c["synonyms"]), "frequency": c["frequency"]})
        split[FREQUENCIES[c["frequency"]]].append(c["name"])
    return vocabulary, split


def write_one_entry_per_line(path: str, entries) -> None:
    import json

    with atomic_write(path) as f:
        if isinstance(entries, dict):
            f.write("{\n" + ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in entries.items()) + "\n}\n")
        else:
            f.write("[\n" + ",\n".join("  " + json.dumps(e) for e in entries) + "\n]\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lvis-json", required=True)
    parser.add_argument("--output-dir", default=METADATA_DIR)
    args = parser.parse_args(argv)
    try:
        vocabulary, split = lvis_metadata(args.lvis_json)
    except InputError as e:
        sys.exit(f"error: {e}")
    write_one_entry_per_line(os.path.join(args.output_dir, "lvis_v1_vocabulary.json"), vocabulary)
    write_one_entry_per_line(os.path.join(args.output_dir, "lvis_v1_ovis_split.json"), split)
    print(f"{len(vocabulary)} categories: {len(split['base'])} base (frequent + common), {len(split['novel'])} novel (rare)")


if __name__ == "__main__":
    main()
