"""Test driver: tools/train_net.py's training, then every process saves its own copy of the
model's parameters and buffers to DUMP/rank<R>.pth (and the buffers a checkpoint leaves out to
DUMP/rank<R>_unsaved.pth), so a test can compare the processes.

    python -m tests.train_and_dump_weights --dump DIR --num-gpus 2 --config-file CFG KEY VALUE ...
"""
import os
import sys

import torch
from detectron2.engine import default_argument_parser, launch
from detectron2.utils import comm

from xpseudo.engine.train_main import setup
from xpseudo.engine.trainer import XPMTrainer, unwrap


def train_and_dump(args, dump: str):
    cfg = setup(args)
    trainer = XPMTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    trainer.train()
    model = unwrap(trainer.model)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save(state, os.path.join(dump, f"rank{comm.get_rank()}.pth"))
    unsaved = {k: v.detach().cpu() for k, v in model.named_buffers() if k not in state}
    torch.save(unsaved, os.path.join(dump, f"rank{comm.get_rank()}_unsaved.pth"))


if __name__ == "__main__":
    parser = default_argument_parser()
    parser.add_argument("--dump", required=True)
    args = parser.parse_args(sys.argv[1:])
    os.makedirs(args.dump, exist_ok=True)
    launch(train_and_dump, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args, args.dump))
