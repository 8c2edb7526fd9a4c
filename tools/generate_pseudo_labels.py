#!/usr/bin/env python
"""Pseudo-label a captioned dataset with a trained XPM teacher, in resumable shards (here or on
Slurm); see ``--help`` and README.md. The code is in xpseudo/pseudo/cli.py."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a clone

from xpseudo.pseudo.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
