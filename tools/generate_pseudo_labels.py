#!/usr/bin/env python
"""Pseudo-label a captioned dataset with a trained XPM teacher, in resumable shards (here or on
Slurm); see ``--help`` and README.md. The code is in xpseudo/pseudo/cli.py (the work) and
xpseudo/slurm/jobs.py (the submission)."""
import sys

from xpseudo.pseudo.cli import parse_args, run
from xpseudo.slurm import SlurmOptionError
from xpseudo.utils.io import InputError


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if args.slurm:
            from xpseudo.slurm.jobs import submit_pseudo_labels, wait_if_local

            _, merge_job = submit_pseudo_labels(args)
            wait_if_local(args, [merge_job])
        else:
            run(args)
    except (InputError, ValueError, SlurmOptionError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    from xpseudo.utils.user_errors import run_reporting_user_errors

    sys.exit(run_reporting_user_errors(main))
