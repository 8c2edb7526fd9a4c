"""What tools/train_net.py runs, importable so a Slurm job (xpseudo.slurm.jobs) can run it too."""
import logging

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import default_setup, launch
from detectron2.evaluation import verify_results

import xpseudo.data.builtin  # noqa: F401  registers the builtin datasets
import xpseudo.modeling  # noqa: F401  registers the models
from xpseudo.config import load_config

from .trainer import XPMTrainer


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


def launch_main(args):
    """detectron2's launch(): one process per GPU of this machine, rendezvous at args.dist_url."""
    logging.getLogger(__name__).info(f"Command line arguments: {args}")
    return launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank, dist_url=args.dist_url, args=(args,))
