#!/usr/bin/env python
"""Train or evaluate an XPM model with detectron2.

    python tools/train_net.py --config-file configs/shapes/xpm_teacher_R18_FPN.yaml [OUTPUT_DIR out/t]
    python tools/train_net.py --config-file CFG --eval-only MODEL.WEIGHTS out/t/model_final.pth [DATASETS.TEST "('shapes_val_novel',)"]
    python tools/train_net.py --config-file CFG --num-gpus 8 [--resume]
"""
import logging

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.evaluation import verify_results

import xpseudo.data.builtin  # noqa: F401  registers the builtin datasets
import xpseudo.modeling  # noqa: F401  registers the models
from xpseudo.config import load_config
from xpseudo.engine import XPMTrainer


def setup(args):
    cfg = load_config(args.config_file, args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = XPMTrainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        results = XPMTrainer.test(cfg, model)
        verify_results(cfg, results)
        return results
    trainer = XPMTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def invoke_main() -> None:
    args = default_argument_parser().parse_args()
    logging.getLogger(__name__).info(f"Command line arguments: {args}")
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank, dist_url=args.dist_url, args=(args,))


if __name__ == "__main__":
    invoke_main()
