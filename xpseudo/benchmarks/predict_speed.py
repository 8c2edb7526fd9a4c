"""tools/predict.py's throughput against the inference of ``train_net.py --eval-only`` on the same
images and model, timed in one run.

--eval-only runs detectron2's test loader (DatasetMapper, one image a batch) through
``inference_on_dataset``; its evaluator's work is left out here (no evaluator), so the comparison is
inference against inference plus everything predict adds: batching, RLE encoding and shard writes.
"""
import tempfile
import time
from typing import List

import torch
from detectron2.data import DatasetMapper, build_detection_test_loader
from detectron2.evaluation import DatasetEvaluators, inference_on_dataset

from xpseudo.predict.predictor import predict_shard
from xpseudo.pseudo.shards import shard_path


def eval_only_seconds(cfg, model, records: List[dict]) -> float:
    loader = build_detection_test_loader(records, mapper=DatasetMapper(cfg, is_train=False), num_workers=cfg.DATALOADER.NUM_WORKERS)
    start = time.perf_counter()
    inference_on_dataset(model, loader, DatasetEvaluators([]))
    return time.perf_counter() - start


def predict_seconds(cfg, model, records: List[dict], image_root: str, category_ids, batch_size: int) -> float:
    with tempfile.TemporaryDirectory() as output:
        header = {"provenance": {"benchmark": True}, "shard": {"index": 0, "count": 1, "start": 0, "end": len(records)}}
        start = time.perf_counter()
        predict_shard(model, cfg, records, image_root, shard_path(output, 0, 1), header, category_ids, batch_size,
                      cfg.DATALOADER.NUM_WORKERS, description="benchmark")
        return time.perf_counter() - start


def throughput(cfg, model, records: List[dict], image_root: str, category_ids, batch_size: int, repeats: int) -> dict:
    model.eval()
    warmup = records[:batch_size]
    with torch.no_grad():
        eval_only_seconds(cfg, model, warmup)
        predict_seconds(cfg, model, warmup, image_root, category_ids, batch_size)
        eval_only, predict = [], []
        for _ in range(repeats):  # interleaved, so drifts in machine load hit both alike
            eval_only.append(eval_only_seconds(cfg, model, records))
            predict.append(predict_seconds(cfg, model, records, image_root, category_ids, batch_size))
    eval_ips, predict_ips = len(records) / min(eval_only), len(records) / min(predict)
    return {"images": len(records), "repeats": repeats, "batch_size": batch_size, "eval_only_images_per_s": eval_ips,
            "predict_images_per_s": predict_ips, "ratio": predict_ips / eval_ips}
