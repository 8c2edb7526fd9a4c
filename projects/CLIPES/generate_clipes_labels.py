#!/usr/bin/env python
"""Pseudo-label a captioned or tagged dataset with CLIP-ES (no trained classes needed), in xpseudo's
resumable shards and format; see README.md here and ``--help`` (the flags of
tools/generate_pseudo_labels.py, Slurm aside). The work is in clipes/generate.py."""
import sys

from xpseudo.pseudo.cli import merge, parse_args
from xpseudo.utils.io import InputError


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.slurm:
        print("error: submit this tool as a job of your own; --slurm is tools/generate_pseudo_labels.py's", file=sys.stderr)
        return 2
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
