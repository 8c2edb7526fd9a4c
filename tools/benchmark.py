#!/usr/bin/env python
"""Benchmarks whose goals are stated as ratios measured in one run.

    # pseudo-labeling throughput / the teacher's plain inference throughput (goal >= 0.9), and the
    # peak memory of pseudo-labeling at two dataset sizes (goal: flat)
    python tools/benchmark.py --task pseudo-label --config-file configs/shapes/xpm_teacher_R18_FPN.yaml \\
        --dataset shapes_train_captions --num-images 200 --memory-sizes 100,800 MODEL.WEIGHTS out/t/model_final.pth
    # a student training step / a plain detectron2 Mask R-CNN step on the same batches (goal <= 1.2)
    python tools/benchmark.py --task student-step --config-file configs/shapes/xpm_student_R18_FPN.yaml \
        --steps 20 XPM.PSEUDO_LABELS_FILE out/pl/pseudo_labels.json
    # tools/predict.py's images/s / the inference of train_net.py --eval-only on the same images (goal >= 0.95)
    python tools/benchmark.py --task predict --config-file configs/shapes/xpm_student_R18_FPN.yaml \
        --dataset shapes_val --num-images 200 MODEL.WEIGHTS out/student/model_final.pth
    # merging N images' pseudo-label shards and the student's data loading with 1 and 2 processes:
    # time, and peak / steady memory per process (goals at 1M: peak <= 2 GiB above the imports, a
    # second process adds <= 0.5 GiB, start-up <= 60 s, merge memory flat)
    python tools/benchmark.py --task pseudo-load --num-images 1000000 --work /scratch/bench
"""
import argparse
import json
import logging
import os
import sys

import torch


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True, choices=("pseudo-label", "student-step", "pseudo-load", "predict"))
    parser.add_argument("--config-file", help="required by pseudo-label and student-step")
    parser.add_argument("--dataset", help="pseudo-label: captioned dataset (default: the config's first XPM.CAPTION_DATASETS); "
                                          "predict: any registered dataset (default: the config's first DATASETS.TEST)")
    parser.add_argument("--batch-size", type=int, default=1, help="predict: images per forward pass, as tools/predict.py")
    parser.add_argument("--num-images", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=2, help="timed passes of each path; the fastest counts")
    parser.add_argument("--memory-sizes", default="100,800", help="dataset sizes for the peak-memory runs ('' to skip)")
    parser.add_argument("--steps", type=int, default=20, help="student-step: timed training steps of each model")
    parser.add_argument("--json-out", help="write the results here too")
    parser.add_argument("--work", help="pseudo-load: folder for the generated shards, images and outputs, kept for reruns "
                        "(default: a temporary folder, removed)")
    parser.add_argument("--phase", choices=("merge", "image-check", "load"), help=argparse.SUPPRESS)
    parser.add_argument("--processes", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE pairs")
    args = parser.parse_args(argv)
    if args.task != "pseudo-load" and not args.config_file:
        parser.error(f"--task {args.task} needs --config-file")
    return args


def build(args):
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    import xpseudo.data.builtin  # noqa: F401
    import xpseudo.modeling  # noqa: F401
    from xpseudo.config import load_config
    from xpseudo.pseudo.generate import labeling_records
    from xpseudo.pseudo.labeler import PseudoLabeler

    cfg = load_config(args.config_file, args.opts)
    cfg.freeze()
    model = build_model(cfg)
    if cfg.MODEL.WEIGHTS:
        DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    dataset = args.dataset or cfg.XPM.CAPTION_DATASETS[0]
    return cfg, PseudoLabeler.from_config(cfg, model, dataset), dataset, labeling_records(dataset)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.getLogger("xpseudo").setLevel(logging.WARNING)
    if args.task == "pseudo-load":
        result = pseudo_load(args)
    elif args.task == "student-step":
        result = student_step(args)
    elif args.task == "predict":
        result = predict(args)
    else:
        result = pseudo_label(args, argv)
    if args.json_out:
        from xpseudo.utils.io import atomic_write_json

        atomic_write_json(args.json_out, result, indent=2)
    return 0


def pseudo_load(args) -> dict:
    import tempfile

    from xpseudo.benchmarks import pseudo_load as bench

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if args.phase:  # one phase, in this fresh process; the last line printed is its result
        result = {"merge": lambda: bench.merge_phase(args.work), "image-check": lambda: bench.image_check_phase(args.work),
                  "load": lambda: {"ranks": bench.load_phase(args.work, args.processes, repo)}}[args.phase]()
        print(json.dumps(result))
        sys.exit(0)
    with tempfile.TemporaryDirectory(prefix="pseudo-load-") as tmp:
        work = os.path.abspath(args.work or tmp)
        result = bench.benchmark([sys.executable, os.path.abspath(__file__), "--task", "pseudo-load"], work, args.num_images, repo)
    gib = 1024
    print(f"{args.num_images} images: generated in {result['generate_s']:.0f} s; pseudo_labels.json {result['pseudo_labels_json_mb']:.0f} MB, "
          f"index {result['index_mb']:.0f} MB")
    print(f"merge: {result['merge_s']:.1f} s, peak {result['merge_peak_above_imports_mb'] / gib:.2f} GiB above the imports "
          f"(every image file checked); the same check alone: {result['image_check_s']:.1f} s")
    for processes in (1, 2):
        ranks = result[f"load_{processes}_processes"]
        print(f"student data loading, {processes} process(es): start-up {max(r['startup_s'] for r in ranks):.1f} s; "
              f"per process peak {max(r['peak_above_imports_mb'] for r in ranks) / gib:.2f} GiB, "
              f"steady {max(r['steady_above_imports_mb'] for r in ranks) / gib:.2f} GiB resident "
              f"({max(r['steady_pss_above_imports_mb'] for r in ranks) / gib:.2f} GiB proportional) above the imports")
    one, two = (sum(r["peak_above_imports_mb"] for r in result[f"load_{p}_processes"]) for p in (1, 2))
    result["second_process_adds_mb"] = two - one
    print(f"second process adds (sum of per-process peaks, shared pages counted twice): {(two - one) / gib:.2f} GiB  (goal <= 0.5)")
    return result


def student_step(args) -> dict:

    import xpseudo.data.builtin  # noqa: F401
    import xpseudo.modeling  # noqa: F401
    from xpseudo.benchmarks.student_step import compare
    from xpseudo.config import load_config
    from xpseudo.data.xpm_loader import build_xpm_train_loader
    from xpseudo.modeling.vocabulary import dataset_vocabulary

    cfg = load_config(args.config_file, args.opts, **{"MODEL.WEIGHTS": ""})  # step time does not depend on the weights
    cfg.freeze()
    num_classes = len(dataset_vocabulary(cfg.DATASETS.TRAIN[0]))
    result = {"task": args.task, "device": cfg.MODEL.DEVICE, "torch_threads": torch.get_num_threads(),
              **compare(cfg, build_xpm_train_loader(cfg), num_classes, steps=args.steps)}
    print(f"plain Mask R-CNN step: {result['plain_step_s'] * 1000:.0f} ms, student step: {result['student_step_s'] * 1000:.0f} ms "
          f"({result['images_per_batch']} images, median of {result['steps']})")
    print(f"ratio (student / plain): {result['ratio']:.3f}  (goal <= 1.2)")
    return result


def predict(args) -> dict:
    torch.set_grad_enabled(False)
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from xpseudo.benchmarks.predict_speed import throughput
    from xpseudo.modeling.vocabulary import default_vocabulary
    from xpseudo.predict.cli import load_model

    args.confidence_threshold = None
    cfg, model = load_model(args)
    dataset = args.dataset or cfg.DATASETS.TEST[0]
    records = DatasetCatalog.get(dataset)[: args.num_images]
    vocabulary = model.set_vocabulary(default_vocabulary(cfg, dataset), dataset)
    image_root = MetadataCatalog.get(dataset).get("image_root", "")
    result = {"task": args.task, "device": cfg.MODEL.DEVICE, "torch_threads": torch.get_num_threads(), "dataset": dataset,
              **throughput(cfg, model, records, image_root, vocabulary.ids, args.batch_size, args.repeats)}
    print(f"--eval-only inference: {result['eval_only_images_per_s']:.2f} images/s")
    print(f"predict (batch {args.batch_size}): {result['predict_images_per_s']:.2f} images/s")
    print(f"ratio (predict / --eval-only inference): {result['ratio']:.3f}  (goal >= 0.95)")
    return result


def pseudo_label(args, argv) -> dict:
    torch.set_grad_enabled(False)
    from xpseudo.benchmarks import pseudo_labels

    cfg, labeler, dataset, records = build(args)
    if args.memory_child is not None:
        print(json.dumps(pseudo_labels.peak_memory_child(cfg, labeler, dataset, records, args.memory_child)))
        sys.exit(0)
    result = {"task": args.task, "device": cfg.MODEL.DEVICE, "torch_threads": torch.get_num_threads(),
              **pseudo_labels.throughput(cfg, labeler, dataset, records, args.num_images, args.repeats)}
    print(f"plain inference: {result['plain_inference_images_per_s']:.2f} images/s")
    print(f"pseudo-labeling: {result['pseudo_label_images_per_s']:.2f} images/s")
    print(f"ratio (pseudo-labeling / inference): {result['ratio']:.3f}  (goal >= 0.9)")
    sizes = [int(s) for s in args.memory_sizes.split(",") if s]
    if sizes:
        argv = [os.path.abspath(__file__), *[a for a in (argv if argv is not None else sys.argv[1:])]]
        result["memory"] = pseudo_labels.peak_memory_by_size(argv, sizes)
        for m in result["memory"]:
            print(f"peak memory, {m['images']} images: {m['max_rss_mb']:.0f} MB resident, {m['python_heap_peak_mb']:.1f} MB Python heap")
    return result


if __name__ == "__main__":
    from xpseudo.utils.user_errors import run_reporting_user_errors

    sys.exit(run_reporting_user_errors(main))
