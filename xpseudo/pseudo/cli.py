"""Command line of tools/generate_pseudo_labels.py, importable so Slurm jobs run the same code.

Library side only: parsing, generating shards and merging here. Submitting to Slurm is
``xpseudo.slurm.jobs``' (which calls into this module), chosen by the tool.
"""
import argparse
import json
import logging
import os

from xpseudo.slurm.options import add_slurm_arguments, finish_slurm_arguments
from xpseudo.utils.io import InputError

from .shards import merge_shards, shard_bounds

USAGE = """Pseudo-label a captioned dataset with a trained XPM teacher (stage 3), in resumable shards.

    # everything in one process: all shards, then the merge
    python tools/generate_pseudo_labels.py --config-file configs/shapes/xpm_teacher_R18_FPN.yaml \\
        --dataset shapes_train_captions --output out/pl MODEL.WEIGHTS out/t/model_final.pth
    # one shard per process (e.g. a job array), then the merge
    python tools/generate_pseudo_labels.py ... --num-shards 8 --shard-index 3 MODEL.WEIGHTS W
    python tools/generate_pseudo_labels.py --output out/pl --num-shards 8 --merge
    # on Slurm: a job array of 8 shards and a merge job that waits for it
    python tools/generate_pseudo_labels.py ... --num-shards 8 --slurm --partition P --job-dir J MODEL.WEIGHTS W

A rerun skips finished shards and continues an interrupted one. The merge writes
OUTPUT/pseudo_labels.json (COCO instances: usable as a training dataset, and by
tools/evaluate_ovis.py), its index OUTPUT/pseudo_labels.index (the student reads the file through
it instead of parsing it whole) and OUTPUT/provenance.json.
"""


def parse_args(argv=None, description: str = USAGE, slurm: bool = True):
    """The labeler's command line; another labeler (projects/CLIPES) gives its own ``description``
    and, when it does not submit jobs itself, ``slurm=False`` (no Slurm flags)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", help="the teacher's config")
    parser.add_argument("--dataset", help="registered captioned or weak-label dataset (default: the config's XPM.PSEUDO_LABELS.DATASET, "
                                          "else its first XPM.CAPTION_DATASETS)")
    parser.add_argument("--output", required=True, help="output folder (shards/, pseudo_labels.json, provenance.json)")
    parser.add_argument("--num-shards", type=int, default=None, help="slices of the dataset (default 1; with --merge alone: found)")
    parser.add_argument("--shard-index", type=int, default=None, help="write this shard only (default: all, then merge)")
    parser.add_argument("--merge", action="store_true", help="only merge the finished shards in --output")
    parser.add_argument("--image-root", help="with --merge: the labeled images' folder; every labeled image must be there, and "
                        "the student then skips that check (the merge of a full run does it by itself)")
    if slurm:
        add_slurm_arguments(parser)
    else:
        parser.set_defaults(slurm=False)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE pairs (MODEL.WEIGHTS is required)")
    args = parser.parse_args(argv)
    if not args.merge and not args.config_file:
        parser.error("--config-file is required unless --merge")
    if args.merge and args.shard_index is not None:
        parser.error("--merge merges all shards; drop --shard-index")
    if args.slurm and (args.merge or args.shard_index is not None):
        parser.error("--slurm submits every shard and the merge; drop --merge / --shard-index")
    return finish_slurm_arguments(args)


def setup(args, add_config=None):
    """The frozen config (xpseudo's keys, plus a project's through ``add_config(cfg)``) and the logs."""
    from detectron2.utils.logger import setup_logger

    from xpseudo.config import load_config

    cfg = load_config(args.config_file, args.opts, add_config=add_config)
    cfg.freeze()
    os.makedirs(args.output, exist_ok=True)
    name = "log.txt" if args.shard_index is None else f"log_shard{args.shard_index}.txt"
    setup_logger(os.path.join(args.output, name), name="xpseudo")
    setup_logger(os.path.join(args.output, name), name="detectron2")
    return cfg


def generate(args) -> None:
    import torch
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    import xpseudo.data.builtin  # noqa: F401  registers the builtin datasets
    import xpseudo.modeling  # noqa: F401  registers the models
    from xpseudo.pseudo.labeler import PseudoLabeler

    cfg = setup(args)
    dataset, records = check_inputs(cfg, args, require_weights=True)
    model = build_model(cfg)
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    torch.set_grad_enabled(False)
    labeler = PseudoLabeler.from_config(cfg, model, dataset)
    write_shards(cfg, args, labeler, dataset, records)


def write_shards(cfg, args, labeler, dataset: str, records) -> None:
    """The shards ``args`` asks for (all, or --shard-index), then the merge when all were asked;
    ``labeler``: xpseudo's ``PseudoLabeler`` or one with its interface (a project's)."""
    from detectron2.data import MetadataCatalog

    from xpseudo.pseudo.generate import generate_shard

    num_shards = args.num_shards or 1
    indices = range(num_shards) if args.shard_index is None else [args.shard_index]
    log = logging.getLogger("xpseudo")
    for index in indices:
        counts = generate_shard(cfg, labeler, dataset, args.output, num_shards, index, records)
        if counts:
            log.info(f"shard {index} of {num_shards}: {json.dumps(counts)}")
    if args.shard_index is None:
        merge(args.output, num_shards, MetadataCatalog.get(dataset).get("image_root"))


def labeled_dataset(cfg):
    """The dataset a config pseudo-labels: XPM.PSEUDO_LABELS.DATASET, else the first caption dataset."""
    return cfg.XPM.PSEUDO_LABELS.DATASET or (cfg.XPM.CAPTION_DATASETS[0] if cfg.XPM.CAPTION_DATASETS else None)


def check_inputs(cfg, args, require_weights: bool):
    """The dataset and its records; bad weights, dataset or shard arguments fail before any work."""
    from xpseudo.pseudo.generate import labeling_records

    if require_weights and (not cfg.MODEL.WEIGHTS or not os.path.isfile(cfg.MODEL.WEIGHTS)):
        raise InputError(cfg.MODEL.WEIGHTS or "MODEL.WEIGHTS", "pseudo-labeling needs the trained teacher's weights file (MODEL.WEIGHTS)")
    dataset = args.dataset or labeled_dataset(cfg)
    if not dataset:
        raise ValueError("no --dataset, and the config has neither XPM.PSEUDO_LABELS.DATASET nor XPM.CAPTION_DATASETS")
    records = labeling_records(dataset, cfg)
    num_shards = args.num_shards or 1
    for index in range(num_shards) if args.shard_index is None else [args.shard_index]:
        shard_bounds(len(records), num_shards, index)
    return dataset, records


def merge(output: str, num_shards=None, image_root=None) -> None:
    provenance = merge_shards(output, num_shards, image_root)
    counts = provenance["counts"]
    print(
        f"wrote {os.path.join(output, 'pseudo_labels.json')}: {counts['annotations']} pseudo masks on {counts['labeled']} images "
        f"({counts['no_match']} whose captions or weak labels name no wanted class, {counts['unlabeled']} with no pick, "
        f"{counts['unreadable']} unreadable) from {len(provenance['shards'])} shard(s)"
    )


def run(args) -> None:
    """Here, without Slurm: only the merge, or the shards (all, or --shard-index) then the merge."""
    if args.merge:
        merge(args.output, args.num_shards, args.image_root)
    else:
        generate(args)
