#!/usr/bin/env python
"""All of XPM in one command: teacher -> pseudo labels -> student -> evaluation of both, here or as
dependent Slurm jobs (--slurm), and where those jobs stand (--status); see ``--help`` and README.md.
The code is in xpseudo/pipeline.py (the stages) and xpseudo/slurm/ (the jobs)."""
import sys

from xpseudo.pipeline import parse_args, run_pipeline
from xpseudo.slurm import SlurmOptionError
from xpseudo.utils.io import InputError


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.status:
        from xpseudo.slurm.status import pipeline_status

        try:
            print(pipeline_status(args.output))
        except (FileNotFoundError, InputError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    if args.slurm and not args.dry_run:  # a dry run prints the stages wherever they would run
        from xpseudo.slurm.jobs import wait_if_local
        from xpseudo.slurm.pipeline_jobs import submit_pipeline

        try:
            jobs = submit_pipeline(args, [a for a in argv if a != "--slurm"])
            wait_if_local(args, jobs["summary"])
        except SlurmOptionError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    return run_pipeline(args)


if __name__ == "__main__":
    from xpseudo.utils.user_errors import run_reporting_user_errors

    sys.exit(run_reporting_user_errors(main))
