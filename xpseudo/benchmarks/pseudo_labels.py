"""Pseudo-labeling throughput against the teacher's plain inference, and peak memory by dataset size.

Both paths read the same images through the same loader and include decoding and mask pasting;
pseudo-labeling adds caption matching, region-word selection, RLE encoding and the shard writes.
"""
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from typing import List

import torch

from xpseudo.pseudo.generate import ShardImages, generate_shard, iterate_batches
from xpseudo.pseudo.labeler import PseudoLabeler


def captioned_subset(labeler: PseudoLabeler, records: List[dict], num_images: int) -> List[dict]:
    """The first ``num_images`` records whose captions name a wanted class (both paths do work on them)."""
    chosen = [r for r in records if labeler.caption_labels(r["captions"]).classes][:num_images]
    if len(chosen) < num_images:
        raise ValueError(f"only {len(chosen)} images have captions naming a wanted class; asked for {num_images}")
    return chosen


def plain_inference_seconds(cfg, labeler: PseudoLabeler, records: List[dict]) -> float:
    """The teacher's standard inference (RPN, box head, NMS, masks pasted) over ``records``."""
    start = time.perf_counter()
    with torch.no_grad():
        for batch in iterate_batches(ShardImages(records, labeler, cfg), cfg.XPM.PSEUDO_LABELS.IMS_PER_BATCH, cfg.DATALOADER.NUM_WORKERS):
            labeler.model([{k: x[k] for k in ("image", "height", "width")} for x in batch])
    return time.perf_counter() - start


def pseudo_label_seconds(cfg, labeler: PseudoLabeler, dataset: str, records: List[dict]) -> float:
    """tools/generate_pseudo_labels.py's work for one shard over ``records``, files included."""
    with tempfile.TemporaryDirectory() as output:
        start = time.perf_counter()
        generate_shard(cfg, labeler, dataset, output, 1, 0, records)
        return time.perf_counter() - start


def throughput(cfg, labeler: PseudoLabeler, dataset: str, records: List[dict], num_images: int, repeats: int) -> dict:
    subset = captioned_subset(labeler, records, num_images)
    labeler.model.eval()
    warmup = subset[: cfg.XPM.PSEUDO_LABELS.IMS_PER_BATCH]
    plain_inference_seconds(cfg, labeler, warmup)
    pseudo_label_seconds(cfg, labeler, dataset, warmup)
    plain, pseudo = [], []
    for _ in range(repeats):  # interleaved, so drifts in machine load hit both alike
        plain.append(plain_inference_seconds(cfg, labeler, subset))
        pseudo.append(pseudo_label_seconds(cfg, labeler, dataset, subset))
    plain_ips, pseudo_ips = num_images / min(plain), num_images / min(pseudo)
    return {"images": num_images, "repeats": repeats, "plain_inference_images_per_s": plain_ips,
            "pseudo_label_images_per_s": pseudo_ips, "ratio": pseudo_ips / plain_ips}


def peak_memory_child(cfg, labeler: PseudoLabeler, dataset: str, records: List[dict], num_images: int) -> dict:
    """Run in a fresh process: label ``num_images`` images and report peak memory."""
    subset = records[:num_images]
    tracemalloc.start()
    with tempfile.TemporaryDirectory() as output:
        generate_shard(cfg, labeler, dataset, output, 1, 0, subset)
    _, python_peak = tracemalloc.get_traced_memory()
    return {"images": len(subset), "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "python_heap_peak_mb": python_peak / 2**20}


def peak_memory_by_size(argv: List[str], sizes: List[int]) -> List[dict]:
    """Re-run this benchmark in a child process per size (so peaks do not mix)."""
    results = []
    for size in sizes:
        # the option goes before the trailing KEY VALUE overrides, which take the rest of the line
        out = subprocess.run([sys.executable, argv[0], "--memory-child", str(size), *argv[1:]], capture_output=True, text=True,
                             env={**os.environ, "PYTHONUNBUFFERED": "1"})
        if out.returncode != 0:
            raise RuntimeError(f"memory run for {size} images failed:\n{out.stderr[-3000:]}")
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return results
