"""Batched inference of an XPM model over images, one resumable shard at a time, as COCO annotations.

The images are read and resized exactly as detectron2's test-time DatasetMapper does
(``ResizeShortestEdge(INPUT.MIN_SIZE_TEST, INPUT.MAX_SIZE_TEST)`` on ``read_image`` in
``INPUT.FORMAT``), and each annotation is what detectron2's ``instances_to_coco_json`` writes
(RLE of the pasted mask, the predicted box as ``bbox``, the score), so evaluating the file gives
the AP of ``train_net.py --eval-only``.
"""
import logging
import os
import sys
from typing import List, Optional, Sequence

import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from tqdm import tqdm

from xpseudo.pseudo.generate import image_entry
from xpseudo.pseudo.shards import ShardWriter

logger = logging.getLogger(__name__)


class PredictImages(torch.utils.data.Dataset):
    """Decoded and resized images; an unreadable file gives an item with ``error`` instead."""

    def __init__(self, records: List[dict], cfg):
        self.records = records
        self.resize = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
        self.format = cfg.INPUT.FORMAT

    def __len__(self):
        return len(self.records)

    def __getitem__(self, index):
        record = self.records[index]
        try:
            image = utils.read_image(record["file_name"], format=self.format)
        except Exception as e:  # any unreadable file is counted and named, never fatal
            return {"record": record, "error": f"{type(e).__name__}: {e}"}
        height, width = image.shape[:2]
        resized = self.resize.get_transform(image).apply_image(image)
        return {"record": record, "original": image, "height": height, "width": width,
                "image": torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)))}


def encode_predictions(image_id: int, instances, category_ids: Sequence[int], keep_empty: bool = False):
    """COCO annotations (without ``id``: the merge numbers them) of one image's predictions.
    Detections whose mask is empty are dropped and counted (no object to label), unless
    ``keep_empty`` (every detection, as detectron2's evaluator sees them). Returns (annotations,
    number dropped)."""
    if len(instances) == 0:
        return [], 0
    masks = instances.pred_masks.numpy().astype(np.uint8)
    rles = mask_util.encode(np.asfortranarray(masks.transpose(1, 2, 0)))
    areas = mask_util.area(rles)
    boxes = instances.pred_boxes.tensor.numpy().astype(np.float64)
    annotations = []
    for rle, area, box, label, score in zip(rles, areas, boxes, instances.pred_classes.tolist(), instances.scores.tolist()):
        if area == 0 and not keep_empty:
            continue
        annotations.append({
            "image_id": int(image_id),
            "category_id": int(category_ids[label]),
            "segmentation": {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")},
            "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])],
            "area": int(area),
            "iscrowd": 0,
            "score": float(score),
        })
    return annotations, len(instances) - len(annotations)


def predict_shard(model, cfg, records: List[dict], image_root: str, path: str, header: dict, category_ids: Sequence[int],
                  batch_size: int = 4, num_workers: int = 0, draw=None, description: str = "predict",
                  keep_empty: bool = False) -> Optional[dict]:
    """Predict ``records`` into shard file ``path`` (resuming its partial file; None when it is
    already finished). ``draw(item, instances)``, when given, is called for every image predicted."""
    if os.path.exists(path):
        return None
    writer = ShardWriter(path, header)
    todo = [r for r in records if r["image_id"] not in writer.done]
    loader = torch.utils.data.DataLoader(PredictImages(todo, cfg), batch_size=batch_size, num_workers=num_workers, collate_fn=list)
    interval = 0.1 if sys.stderr.isatty() else 30  # a batch job's log: a progress line every 30 s
    try:
        with tqdm(total=len(records), initial=len(records) - len(todo), desc=description, unit="img", mininterval=interval) as bar, \
                torch.no_grad():
            for batch in loader:
                ready = [x for x in batch if "image" in x]
                outputs = iter(model([{k: x[k] for k in ("image", "height", "width")} for x in ready]) if ready else [])
                for item in batch:
                    record = item["record"]
                    if "error" in item:
                        logger.warning(f"unreadable image {record['file_name']}: {item['error']}")
                        writer.add(image_entry(record, image_root), "unreadable", [])
                        continue
                    instances = next(outputs)["instances"].to("cpu")
                    annotations, empty = encode_predictions(record["image_id"], instances, category_ids, keep_empty)
                    entry = image_entry(record, image_root, item["height"], item["width"])
                    writer.add(entry, "labeled" if annotations else "unlabeled", annotations, empty)
                    if draw is not None:
                        draw(item, instances)
                bar.update(len(batch))
        return writer.finish()
    finally:
        writer.close()
