#!/usr/bin/env python
"""Pseudo-label a captioned or tagged dataset with CLIP-ES (no trained classes needed), in xpseudo's
resumable shards and format; see README.md here. The work is in clipes/generate.py."""
import sys

from xpseudo.pseudo.cli import merge, parse_args
from xpseudo.utils.io import InputError

USAGE = """Pseudo-label a captioned or tagged dataset with CLIP-ES (GradCAM of a CLIP model over the classes an
image's captions or tags name, refined by its attention): no trained detector needed. Writes xpseudo's
resumable shards, then OUTPUT/pseudo_labels.json, as tools/generate_pseudo_labels.py does.

    python projects/CLIPES/generate_clipes_labels.py --config-file projects/CLIPES/configs/clipes_shapes.yaml \
        --dataset shapes_train_captions --output out/clipes
    python projects/CLIPES/generate_clipes_labels.py ... --num-shards 8 --shard-index 3
    python projects/CLIPES/generate_clipes_labels.py --output out/clipes --num-shards 8 --merge

To run shards on Slurm, submit this command as your own job array (one --shard-index per task).
"""


def main(argv=None) -> int:
    args = parse_args(argv, description=USAGE, slurm=False)
    try:
        if args.merge:
            merge(args.output, args.num_shards, args.image_root)
        else:
            from clipes.generate import generate

            generate(args)
    except (InputError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
