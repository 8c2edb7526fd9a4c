#!/usr/bin/env python
"""Train or evaluate an XPM model with detectron2, here or on Slurm.

    python tools/train_net.py --config-file configs/shapes/xpm_teacher_R18_FPN.yaml [OUTPUT_DIR out/t]
    python tools/train_net.py --config-file CFG --eval-only MODEL.WEIGHTS out/t/model_final.pth [DATASETS.TEST "('shapes_val_novel',)"]
    python tools/train_net.py --config-file CFG --num-gpus 8 [--resume]
    python tools/train_net.py --config-file CFG --slurm --nodes 2 --gpus-per-node 8 --partition P --time 4320 --job-dir J
"""
import sys

from detectron2.engine import default_argument_parser

from xpseudo.slurm import SlurmOptionError, add_slurm_arguments, finish_slurm_arguments


def parse_args(argv=None):
    parser = default_argument_parser()
    add_slurm_arguments(parser)
    return finish_slurm_arguments(parser.parse_args(argv))


def invoke_main(argv=None) -> int:
    args = parse_args(argv)
    if args.slurm:
        from xpseudo.slurm.jobs import submit_training, wait_if_local

        try:
            wait_if_local(args, [submit_training(args)])
        except SlurmOptionError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    from xpseudo.engine.train_main import launch_main

    launch_main(args)
    return 0


if __name__ == "__main__":
    from xpseudo.utils.user_errors import run_reporting_user_errors

    sys.exit(run_reporting_user_errors(invoke_main))
