#!/usr/bin/env python
"""Label a folder, glob, list or dataset of images with a trained XPM model and the vocabulary you
choose, into one COCO instances file; see ``--help`` and README.md. The code is in
xpseudo/predict/."""
import sys

from xpseudo.predict.cli import parse_args, run
from xpseudo.utils.io import InputError


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except (InputError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    from xpseudo.utils.user_errors import run_reporting_user_errors

    sys.exit(run_reporting_user_errors(main))
