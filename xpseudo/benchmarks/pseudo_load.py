"""Benchmark: merging pseudo-label shards of N images and loading them into the student, per process.

Synthetic pseudo labels in the labeler's exact shard format (``ShardWriter``; 1-4 masks per image,
2.5 on average, on images of 400x300 to 640x480 whose files are symbolic links to one real JPEG per
size, so that the student's mapper decodes them). Each phase runs in a fresh process so its peak
resident memory is its own:

- merge: ``merge_shards`` with the image folder (every image file is checked once, here);
- load with 1 and with 2 training processes (detectron2's ``launch``, gloo): the Open Images +
  Conceptual Captions student config's train loader (ground truth: a small shapes set), up to the
  first batch (the start-up), then more batches (the steady state).
"""
import json
import os
import resource
import subprocess
import tempfile
import time
from typing import List

import numpy as np

SIZES = [(300, 400), (375, 500), (360, 480), (400, 600), (427, 640), (480, 640)]  # (height, width)
STUDENT_CONFIG = "configs/openimages_cc/xpm_student_R50_FPN_1x.yaml"


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def _pss_mb() -> float:
    with open("/proc/self/smaps_rollup") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("Pss:")) / 1024


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _mask_pool(rng: np.random.Generator, height: int, width: int, count: int = 16) -> List[dict]:
    """Annotations (as the labeler encodes them) of random ellipses on an image of this size."""
    from xpseudo.pseudo.annotations import encode_pseudo_annotations

    y, x = np.mgrid[:height, :width]
    masks = []
    for _ in range(count):
        cy, cx = rng.uniform(0.2, 0.8) * height, rng.uniform(0.2, 0.8) * width
        ry, rx = rng.uniform(0.05, 0.3) * height, rng.uniform(0.05, 0.3) * width
        masks.append(((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1)
    annotations, _ = encode_pseudo_annotations(0, np.stack(masks), [0] * count, [0.5] * count, ["word"] * count)
    return annotations


def generate(work: str, num_images: int, num_shards: int = 8, seed: int = 0) -> None:
    """Shards, image files and the two registered datasets' files under ``work`` (skipped when
    there for the same number of images)."""
    import cv2

    from xpseudo.data.metadata_files import metadata_file
    from xpseudo.pseudo.shards import ShardWriter, shard_bounds, shard_path
    from xpseudo.text.vocabulary import Vocabulary
    from xpseudo.utils.io import atomic_write_json

    marker = os.path.join(work, "generated.json")
    if os.path.exists(marker) and json.load(open(marker)) == {"num_images": num_images, "num_shards": num_shards, "seed": seed}:
        return
    rng = np.random.default_rng(seed)
    categories = [{"id": c.id, "name": c.name} for c in Vocabulary.from_file(metadata_file("shapes_vocabulary.json"))]
    pools = {size: _mask_pool(rng, *size) for size in SIZES}
    images = os.path.join(work, "images")
    templates = os.path.join(work, "templates")
    os.makedirs(templates, exist_ok=True)
    for height, width in SIZES:
        gradient = (np.add.outer(np.arange(height), np.arange(width)) % 256).astype(np.uint8)
        cv2.imwrite(os.path.join(templates, f"{height}x{width}.jpg"), np.stack([gradient] * 3, axis=-1))
    provenance = {"dataset": "bench_cc", "num_images": num_images, "categories": categories, "benchmark": "pseudo-load"}
    for index in range(num_shards):
        start, end = shard_bounds(num_images, num_shards, index)
        writer = ShardWriter(shard_path(work, index, num_shards),
                             {"provenance": provenance, "shard": {"index": index, "count": num_shards, "start": start, "end": end}})
        for k in range(start, end):
            height, width = SIZES[k % len(SIZES)]
            file_name = f"{k // 1000:05d}/{k}.jpg"
            if k % 1000 == 0:
                os.makedirs(os.path.join(images, f"{k // 1000:05d}"), exist_ok=True)
            target = os.path.join(images, file_name)
            if not os.path.exists(target):
                os.symlink(os.path.join(templates, f"{height}x{width}.jpg"), target)
            pool = pools[(height, width)]
            annotations = [dict(pool[(k + j) % len(pool)], image_id=k + 1, category_id=categories[(k + j) % len(categories)]["id"])
                           for j in range(1 + k % 4)]
            writer.add({"id": k + 1, "file_name": file_name, "height": height, "width": width}, "labeled", annotations)
        writer.finish()
    atomic_write_json(marker, {"num_images": num_images, "num_shards": num_shards, "seed": seed})


def merge_phase(work: str) -> dict:
    from xpseudo.pseudo.shards import merge_shards

    before = _rss_mb()
    started = time.perf_counter()
    merge_shards(work, image_root=os.path.join(work, "images"))
    seconds = time.perf_counter() - started
    return {"merge_s": seconds, "merge_peak_above_imports_mb": _peak_mb() - before,
            "pseudo_labels_json_mb": os.path.getsize(os.path.join(work, "pseudo_labels.json")) / 2**20,
            "index_mb": os.path.getsize(os.path.join(work, "pseudo_labels.index")) / 2**20}


def image_check_phase(work: str) -> dict:
    """What the student's rank 0 pays when the images were checked under another folder."""
    from xpseudo.pseudo.label_index import PseudoLabelIndex

    path = os.path.join(work, "pseudo_labels.json")
    started = time.perf_counter()
    PseudoLabelIndex(os.path.join(work, "pseudo_labels.index"), path).check_image_files(os.path.join(work, "images"))
    return {"image_check_s": time.perf_counter() - started}


def register(work: str) -> None:
    """bench_gt (a small shapes set with ground truth) and bench_cc (the pseudo-labeled images)."""
    from xpseudo.data.metadata_files import metadata_file
    from xpseudo.data.ovis_datasets import register_ovis_dataset

    split, vocabulary = metadata_file("shapes_split.json"), metadata_file("shapes_vocabulary.json")
    gt = os.path.join(work, "gt")
    register_ovis_dataset("bench_gt", image_root=os.path.join(gt, "images", "train"), split_file=split, vocabulary_file=vocabulary,
                          instances_json=os.path.join(gt, "annotations", "instances_train_base.json"), replace=True)
    register_ovis_dataset("bench_cc", image_root=os.path.join(work, "images"), split_file=split, vocabulary_file=vocabulary,
                          captions_json=os.path.join(gt, "annotations", "captions_train.json"), replace=True)


def _load_worker(work: str, repo: str, steady_batches: int, result_file: str) -> None:
    """One training process: build the student's train loader, take the first batch (start-up)
    and ``steady_batches`` more; rank 0 writes every process's figures."""
    import torch
    from detectron2.utils import comm

    from xpseudo.config import load_config
    from xpseudo.data.xpm_loader import build_xpm_train_loader

    torch.set_num_threads(1)
    register(work)
    imports = _rss_mb()
    pss_imports = _pss_mb()
    cfg = load_config(os.path.join(repo, STUDENT_CONFIG), [
        "DATASETS.TRAIN", "('bench_gt',)", "DATASETS.TEST", "()", "XPM.PSEUDO_LABELS_FILE", os.path.join(work, "pseudo_labels.json"),
        "XPM.PSEUDO_LABELED_DATASET", "bench_cc", "MODEL.DEVICE", "cpu", "DATALOADER.NUM_WORKERS", "0",
        "SOLVER.IMS_PER_BATCH", str(2 * comm.get_world_size()), "OUTPUT_DIR", os.path.join(work, "output"), "SEED", "0",
    ])
    started = time.perf_counter()
    batches = iter(build_xpm_train_loader(cfg))
    next(batches)
    startup = time.perf_counter() - started
    peak_startup = _peak_mb()
    for _ in range(steady_batches):
        next(batches)
    figures = {"rank": comm.get_rank(), "imports_mb": imports, "startup_s": startup,
               "startup_peak_above_imports_mb": peak_startup - imports, "peak_above_imports_mb": _peak_mb() - imports,
               "steady_above_imports_mb": _rss_mb() - imports, "steady_pss_above_imports_mb": _pss_mb() - pss_imports}
    everyone = comm.all_gather(figures)
    if comm.is_main_process():
        with open(result_file, "w") as f:
            json.dump(everyone, f)
    # leave together: a process exiting while gloo still talks to the other can abort it
    comm.synchronize()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def load_phase(work: str, processes: int, repo: str, steady_batches: int = 10) -> List[dict]:
    import socket

    from detectron2.engine import launch

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.NamedTemporaryFile(suffix=".json") as result:
        launch(_load_worker, processes, dist_url=f"tcp://127.0.0.1:{port}", args=(work, repo, steady_batches, result.name))
        with open(result.name) as f:
            return json.load(f)


def run_phase(argv_prefix: List[str], phase: str, work: str, extra: List[str] = ()) -> dict:
    """Run one phase in a fresh interpreter; its last stdout line is the JSON result."""
    out = subprocess.run([*argv_prefix, "--phase", phase, "--work", work, *extra], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"phase {phase} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def benchmark(argv_prefix: List[str], work: str, num_images: int, repo: str) -> dict:
    from xpseudo.data.synthetic_shapes import generate_shapes_dataset  # noqa: F401  (fail early without it)

    started = time.perf_counter()
    generate(work, num_images)
    _make_ground_truth(os.path.join(work, "gt"))
    result = {"task": "pseudo-load", "images": num_images, "generate_s": time.perf_counter() - started}
    result.update(run_phase(argv_prefix, "merge", work))
    result.update(run_phase(argv_prefix, "image-check", work))
    for processes in (1, 2):
        result[f"load_{processes}_processes"] = run_phase(argv_prefix, "load", work, ["--processes", str(processes)])["ranks"]
    return result


def _make_ground_truth(directory: str) -> None:
    from xpseudo.data.metadata_files import metadata_file
    from xpseudo.data.split import OvisSplit
    from xpseudo.data.synthetic_shapes import generate_shapes_dataset
    from xpseudo.text.vocabulary import Vocabulary

    if not os.path.exists(os.path.join(directory, "annotations", "instances_train_base.json")):
        generate_shapes_dataset(directory, Vocabulary.from_file(metadata_file("shapes_vocabulary.json")),
                                OvisSplit.from_file(metadata_file("shapes_split.json")), num_train=40, num_val=1, image_size=128)
