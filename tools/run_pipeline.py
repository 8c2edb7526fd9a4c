#!/usr/bin/env python
"""All of XPM in one command: teacher -> pseudo labels -> student -> evaluation of both, here or as
dependent Slurm jobs; see ``--help`` and README.md. The code is in xpseudo/pipeline.py."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a clone

from xpseudo.pipeline import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
