"""Command line of tools/predict.py: label images with a trained XPM model and a vocabulary of your
choice into one COCO instances file, in resumable shards, on one or several processes."""
import argparse
import hashlib
import json
import logging
import os

from xpseudo.utils.io import InputError, atomic_write_json

USAGE = """Label images with a trained model and the vocabulary you choose; writes a COCO instances file
(images with sizes, your classes as categories, RLE masks, boxes, scores) that pycocotools,
tools/evaluate_ovis.py, tools/pseudo_label_report.py and the student (XPM.PSEUDO_LABELS_FILE) read.

    python tools/predict.py --config-file configs/shapes/xpm_student_R18_FPN.yaml --input photos/ \\
        --vocabulary "star,cross,crescent" --output photos.json --draw photos_drawn/ MODEL.WEIGHTS out/student/model_final.pth
    # 8 processes on one machine; or shards on many machines, then the merge
    python tools/predict.py ... --num-gpus 8
    python tools/predict.py ... --num-shards 16 --shard-index 3
    python tools/predict.py --output photos.json --num-shards 16 --merge

--input is a folder (every image under it), a glob pattern, a .txt list of image paths, an image,
or a registered dataset (XPM.DATASET_FILES or a builtin). --vocabulary is comma-separated names or
a vocabulary file (names, synonyms, prompts, ids); default: the dataset's classes, else those of
the config's first test dataset. Shards live beside OUTPUT in <name>.predict/, so a rerun
continues where a stopped one ended; unreadable images are counted and named, never fatal.
"""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=USAGE, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", help="the model's config (required unless --merge)")
    parser.add_argument("--input", help="folder, glob, LIST.txt, image file or registered dataset (required unless --merge)")
    parser.add_argument("--vocabulary", help='"a,b,c" or a vocabulary file (default: the dataset\'s classes)')
    parser.add_argument("--output", required=True, help="the COCO instances file to write (OUT.json)")
    parser.add_argument("--draw", help="also draw each image's predictions into this folder")
    parser.add_argument("--confidence-threshold", type=float, help="minimum score (default: the config's MODEL.ROI_HEADS.SCORE_THRESH_TEST)")
    parser.add_argument("--keep-empty-masks", action="store_true",
                        help="keep detections whose mask is empty (as --eval-only scores them); such a file is no training data")
    parser.add_argument("--batch-size", type=int, default=1,
                        help="images per forward pass; above 1 the results change in the last bits with the batch's "
                             "composition (convolution kernels are chosen per batch size), so shards and process counts "
                             "then no longer give byte-identical files")
    parser.add_argument("--num-gpus", type=int, default=1, help="processes on this machine (one per GPU; on a CPU machine, CPU processes)")
    parser.add_argument("--num-shards", type=int, help="slices of the input (default 1, or --num-gpus)")
    parser.add_argument("--shard-index", type=int, help="write this shard only")
    parser.add_argument("--merge", action="store_true", help="only merge the finished shards into --output")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE pairs (MODEL.WEIGHTS ...)")
    args = parser.parse_args(argv)
    if not args.merge and not (args.config_file and args.input):
        parser.error("--config-file and --input are required unless --merge")
    if args.merge and args.shard_index is not None:
        parser.error("--merge merges all shards; drop --shard-index")
    if args.shard_index is not None and args.num_gpus != 1:
        parser.error("--shard-index writes one shard in one process; drop --num-gpus")
    if args.batch_size < 1 or args.num_gpus < 1 or (args.num_shards is not None and args.num_shards < 1):
        parser.error("--batch-size, --num-gpus and --num-shards must be >= 1")
    if args.confidence_threshold is not None and not 0.0 <= args.confidence_threshold <= 1.0:
        parser.error("--confidence-threshold must lie in [0, 1]")
    args.output = os.path.abspath(args.output)
    return args


def work_dir(output: str) -> str:
    """Where the shards of ``output`` go: ``<output without .json>.predict/``."""
    return os.path.splitext(output)[0] + ".predict"


def provenance_path(output: str) -> str:
    return os.path.splitext(output)[0] + ".provenance.json"


def shard_count(args, world_size: int = 1) -> int:
    return max(args.num_shards or 1, world_size if args.shard_index is None else 1)


def load_model(args):
    """(cfg, model in eval mode with its weights) for ``args`` (config file, overrides, threshold)."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    import xpseudo.data.builtin  # noqa: F401  registers the builtin datasets
    import xpseudo.modeling  # noqa: F401  registers the models
    from xpseudo.config import load_config

    threshold = getattr(args, "confidence_threshold", None)
    overrides = {} if threshold is None else {"MODEL.ROI_HEADS.SCORE_THRESH_TEST": threshold}
    cfg = load_config(args.config_file, args.opts, **overrides)
    cfg.freeze()
    if not cfg.MODEL.WEIGHTS or not os.path.isfile(cfg.MODEL.WEIGHTS):
        raise InputError(cfg.MODEL.WEIGHTS or "MODEL.WEIGHTS", "needs a trained model's weights file (MODEL.WEIGHTS)")
    model = build_model(cfg)
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    model.eval()
    return cfg, model


def choose_vocabulary(args, cfg, dataset):
    """--vocabulary, else the input dataset's classes, else the first test dataset's."""
    from xpseudo.modeling.vocabulary import default_vocabulary
    from xpseudo.text.vocabulary import Vocabulary

    if args.vocabulary:
        return Vocabulary.parse(args.vocabulary, "--vocabulary")
    vocabulary = default_vocabulary(cfg, dataset)
    if vocabulary is None:
        raise InputError(args.input, "no --vocabulary, and neither the input nor the config's DATASETS.TEST names classes")
    return vocabulary


def provenance(args, cfg, spec, vocabulary, num_shards: int) -> dict:
    """What the predictions depend on; every shard of one run carries the same (the merge checks)."""
    from xpseudo.pseudo.generate import file_sha256

    config = cfg.clone()
    config.defrost()
    config.OUTPUT_DIR = ""
    ids = [r["image_id"] for r in spec.records]
    info = {
        "tool": "predict",
        "weights": cfg.MODEL.WEIGHTS,
        "weights_sha256": file_sha256(cfg.MODEL.WEIGHTS),
        "config": config.dump(),
        "input": args.input,
        "dataset": spec.dataset,
        "image_root": spec.image_root,
        "num_images": len(spec.records),
        "image_ids_sha256": hashlib.sha256(json.dumps(ids).encode()).hexdigest(),
        "categories": [{"id": c.id, "name": c.name} for c in vocabulary],
        "prompts": list(vocabulary.prompts),
        "num_shards": num_shards,
        "keep_empty_masks": args.keep_empty_masks,
    }
    return json.loads(json.dumps(info))


def drawer(folder: str, image_root: str, class_names):
    """Draws an image's predictions to FOLDER/<its path under the image root>.png."""
    import cv2
    from detectron2.data.catalog import Metadata
    from detectron2.utils.visualizer import ColorMode, Visualizer

    metadata = Metadata(name="predict", thing_classes=list(class_names))

    def draw(item, instances):
        rgb = item["original"][:, :, ::-1]  # the images are read as BGR (checked by the caller)
        drawn = Visualizer(rgb, metadata, instance_mode=ColorMode.IMAGE).draw_instance_predictions(instances)
        relative = os.path.relpath(item["record"]["file_name"], image_root)
        if relative.startswith(os.pardir):
            relative = os.path.basename(relative)
        out = os.path.join(folder, os.path.splitext(relative)[0] + ".png")
        os.makedirs(os.path.dirname(out), exist_ok=True)
        cv2.imwrite(out, drawn.get_image()[:, :, ::-1])

    return draw


def predict_worker(args):
    """One process: its shards (all of them, or every world-size-th from its rank), then the merge
    on rank 0."""
    import torch
    from detectron2.data import DatasetCatalog
    from detectron2.utils import comm
    from detectron2.utils.logger import setup_logger

    from xpseudo.pseudo.shards import shard_bounds, shard_path

    from .inputs import resolve_input
    from .predictor import predict_shard

    setup_logger(name="xpseudo", distributed_rank=comm.get_rank())
    torch.set_grad_enabled(False)
    cfg, model = load_model(args)
    spec = resolve_input(args.input, DatasetCatalog.list())
    vocabulary = model.set_vocabulary(choose_vocabulary(args, cfg, spec.dataset), "the prediction vocabulary")
    if args.draw and cfg.INPUT.FORMAT != "BGR":
        raise InputError(args.draw, f"--draw needs INPUT.FORMAT BGR, the config has {cfg.INPUT.FORMAT}")
    rank, world = comm.get_rank(), comm.get_world_size()
    num_shards = shard_count(args, world)
    indices = [args.shard_index] if args.shard_index is not None else list(range(num_shards))[rank::world]
    for index in indices:
        shard_bounds(len(spec.records), num_shards, index)  # a bad index or too many shards: before any work
    header_base = provenance(args, cfg, spec, vocabulary, num_shards)
    draw = drawer(args.draw, spec.image_root, vocabulary.names) if args.draw else None
    for index in indices:
        start, end = shard_bounds(len(spec.records), num_shards, index)
        header = {"provenance": header_base, "shard": {"index": index, "count": num_shards, "start": start, "end": end}}
        path = shard_path(work_dir(args.output), index, num_shards)
        _check_finished_shard(path, header)
        predict_shard(model, cfg, spec.records[start:end], spec.image_root, path, header, vocabulary.ids, args.batch_size,
                      cfg.DATALOADER.NUM_WORKERS, draw, description=f"predict {index + 1}/{num_shards}", keep_empty=args.keep_empty_masks)
    comm.synchronize()
    if args.shard_index is None and comm.is_main_process():
        merge(args.output, num_shards, args.keep_empty_masks)


def _check_finished_shard(path: str, header: dict) -> None:
    if os.path.exists(path):
        with open(path) as f:
            if json.loads(f.readline()).get("header") != header:
                raise InputError(path, "a finished shard made with other settings (model, input, vocabulary or config) is in the way; "
                                       "use another --output or delete it")


def merge(output: str, num_shards=None, keep_empty_masks: bool = False) -> dict:
    """Merge the shards of ``output`` into it; returns the provenance (also written beside it)."""
    from xpseudo.pseudo.shards import find_shards, iter_shard, merge_shards

    directory = work_dir(output)
    provenance_file = provenance_path(output)
    info = merge_shards(directory, num_shards, None, output=output, provenance_file=provenance_file, keep=("labeled", "unlabeled"),
                        description="xpseudo predictions", allow_empty_masks=keep_empty_masks)
    unreadable = [line["image"]["file_name"] for path in find_shards(directory)[len(info["shards"])]
                  for line in iter_shard(path) if line.get("status") == "unreadable"]
    info["unreadable_images"] = unreadable
    atomic_write_json(provenance_file, info, indent=2)
    counts = info["counts"]
    print(f"wrote {output}: {counts['annotations']} instances on {counts['labeled'] + counts['unlabeled']} images "
          f"({counts['unlabeled']} with none; {counts['empty_masks']} empty masks dropped), {counts['unreadable']} unreadable" + (f": {', '.join(unreadable)}" if unreadable else ""))
    return info


def run(args) -> None:
    if args.merge:
        merge(args.output, args.num_shards, args.keep_empty_masks)
        return
    from detectron2.engine import launch

    logging.getLogger("xpseudo").setLevel(logging.INFO)
    launch(predict_worker, args.num_gpus, dist_url="auto", args=(args,))
