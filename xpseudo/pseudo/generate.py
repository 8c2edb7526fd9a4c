"""Write one shard of pseudo labels for a registered captioned or weakly labeled dataset (stage 3 of XPM, offline)."""
import hashlib
import json
import logging
import os
import sys
from typing import Iterator, List, Optional, Sequence

import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from tqdm import tqdm

from xpseudo.utils.io import InputError

from .annotations import encode_pseudo_annotations
from .shards import ShardWriter, shard_bounds, shard_path

logger = logging.getLogger(__name__)


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weak_label_kind(dataset_name: str) -> str:
    """What the labeler reads from the dataset: "captions", or the weak labels its registration names."""
    return MetadataCatalog.get(dataset_name).get("weak_labels", None) or "captions"


def labeling_records(dataset_name: str, cfg=None) -> List[dict]:
    """The dataset's records, in catalog order. A captioned dataset's must each carry ``captions``;
    a weak-label dataset's are checked when loaded (``xpseudo.data.weak_labels``). With ``cfg``'s
    XPM.PSEUDO_LABELS.IMAGES "annotated", only the images that also hold an annotation in
    DATASETS.TRAIN (the same file name), as the authors' release labels base-annotated images only."""
    records = DatasetCatalog.get(dataset_name)
    if cfg is not None:
        records = images_to_label(records, cfg.XPM.PSEUDO_LABELS.IMAGES, cfg.DATASETS.TRAIN, dataset_name)
    if weak_label_kind(dataset_name) != "captions":
        return records
    for record in records:
        if "captions" not in record:
            source = MetadataCatalog.get(dataset_name).get("json_file") or dataset_name
            raise InputError(source, f"image {record.get('image_id')} of {dataset_name!r} has no captions: pseudo-labeling needs "
                                     "a captioned dataset or one registered with weak_labels")
    return records


IMAGE_CHOICES = ("all", "annotated")


def images_to_label(records: List[dict], images: str, annotated_datasets: Sequence[str], dataset_name: str) -> List[dict]:
    """``records`` ("all"), or those whose file name has an annotation in ``annotated_datasets``."""
    if images not in IMAGE_CHOICES:
        raise ValueError(f"XPM.PSEUDO_LABELS.IMAGES must be one of {IMAGE_CHOICES}, got {images!r}")
    if images == "all":
        return records
    if not annotated_datasets:
        raise ValueError("XPM.PSEUDO_LABELS.IMAGES 'annotated' needs the annotated datasets in DATASETS.TRAIN")
    annotated = {os.path.basename(r["file_name"]) for name in annotated_datasets for r in DatasetCatalog.get(name) if r.get("annotations")}
    kept = [r for r in records if os.path.basename(r["file_name"]) in annotated]
    logger.info(f"labeling the {len(kept)} of {len(records)} images of {dataset_name} annotated in {', '.join(annotated_datasets)}")
    return kept


def provenance(cfg, labeler, dataset_name: str, records: List[dict], num_shards: int) -> dict:
    """What the labels depend on; every shard of one run carries the same (the merge checks it).
    ``labeler``: a ``PseudoLabeler`` or any labeler with its interface (``WeakLabelReader``'s
    ``image_labels``, ``vocabulary``, ``wanted``, ``dataset_ids``, ``settings()``, and a call that
    gives Instances as ``PseudoLabeler.__call__`` does)."""
    weights = cfg.MODEL.WEIGHTS
    config = cfg.clone()
    config.defrost()
    config.OUTPUT_DIR = ""  # where a run writes does not change its labels
    ids = [r["image_id"] for r in records]
    info = {
        "teacher_weights": weights,
        "teacher_sha256": file_sha256(weights) if weights and os.path.isfile(weights) else None,
        "config": config.dump(),
        "dataset": dataset_name,
        "source": weak_label_kind(dataset_name),
        "num_images": len(records),
        "image_ids_sha256": hashlib.sha256(json.dumps(ids).encode()).hexdigest(),
        "categories": [{"id": i, "name": c.name} for i, c in zip(labeler.dataset_ids, labeler.vocabulary)],
        "caption_vocabulary_file": MetadataCatalog.get(dataset_name).get("caption_vocabulary_file"),
        "classes": cfg.XPM.PSEUDO_LABELS.CLASSES,
        "wanted_classes": [labeler.vocabulary[i].name for i in sorted(labeler.wanted)],
        "labeler": getattr(labeler, "name", type(labeler).__name__),
        "selection": labeler.settings(),
        "num_shards": num_shards,
    }
    return json.loads(json.dumps(info))  # JSON types only, so it compares equal to a shard's header


class ShardImages(torch.utils.data.Dataset):
    """Decoded, resized images of a slice with what names their classes: caption words (with their
    counts), tags, boxes, points or scribbles (``kind``). Images naming no wanted class are not read."""

    def __init__(self, records, labeler, cfg, kind: str = "captions"):
        self.records, self.labeler, self.kind = records, labeler, kind
        self.resize = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
        self.format = cfg.INPUT.FORMAT

    def __len__(self):
        return len(self.records)

    def __getitem__(self, index):
        record = self.records[index]
        labels = self.labeler.image_labels(record, self.kind)
        item = {"record": record, "word_classes": labels.classes, "words": labels.names, "skipped": labels.skipped}
        if labels.counts is not None:
            item["word_counts"] = labels.counts
        if not labels.classes:
            return item
        try:
            image = utils.read_image(record["file_name"], format=self.format)
        except Exception as e:  # any unreadable file is counted, never fatal
            item["error"] = f"{type(e).__name__}: {e}"
            return item
        height, width = image.shape[:2]
        transform = self.resize.get_transform(image)
        resized = transform.apply_image(image)
        item.update(image=torch.as_tensor(resized.transpose(2, 0, 1).copy()), height=height, width=width)
        # boxes and points into the resized image's pixels, as the model sees it
        if labels.boxes is not None:
            item["weak_boxes"] = torch.as_tensor(transform.apply_box(np.asarray(labels.boxes, dtype=np.float64)), dtype=torch.float32)
        if labels.points is not None:
            item["weak_points"] = torch.as_tensor(transform.apply_coords(np.asarray(labels.points, dtype=np.float64)), dtype=torch.float32)
        if labels.scribbles is not None:
            item["weak_scribbles"] = [torch.as_tensor(transform.apply_coords(np.asarray(s, dtype=np.float64)), dtype=torch.float32)
                                      for s in labels.scribbles]
        return item


def image_entry(record: dict, image_root: str, height: Optional[int] = None, width: Optional[int] = None) -> dict:
    file_name = record["file_name"]
    if image_root:  # relative to the dataset's image folder, whether both are absolute or both relative
        relative = os.path.relpath(file_name, image_root)
        if not relative.startswith(os.pardir):
            file_name = relative
    return {"id": record["image_id"], "file_name": file_name, "height": height or record.get("height"), "width": width or record.get("width")}


def iterate_batches(dataset: ShardImages, batch_size: int, num_workers: int) -> Iterator[List[dict]]:
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=list)
    yield from loader


def generate_shard(cfg, labeler, dataset_name: str, output_dir: str, num_shards: int, shard_index: int,
                   records: Optional[List[dict]] = None) -> dict:
    """Write shard ``shard_index`` of ``num_shards`` to OUTPUT/shards/ (skipped when it is already
    finished; continued when a previous run was interrupted). Returns the shard's counts."""
    records = records if records is not None else labeling_records(dataset_name, cfg)
    start, end = shard_bounds(len(records), num_shards, shard_index)
    path = shard_path(output_dir, shard_index, num_shards)
    header = {"provenance": provenance(cfg, labeler, dataset_name, records, num_shards),
              "shard": {"index": shard_index, "count": num_shards, "start": start, "end": end}}
    if os.path.exists(path):
        with open(path) as f:
            if json.loads(f.readline()).get("header") == header:
                logger.info(f"{path} is finished; skipped")
                return {}
        raise InputError(path, "a finished shard written with other settings is in the way; use another --output or delete it")
    writer = ShardWriter(path, header)
    image_root = MetadataCatalog.get(dataset_name).get("image_root", "")
    todo = [r for r in records[start:end] if r["image_id"] not in writer.done]
    batch_size = cfg.XPM.PSEUDO_LABELS.IMS_PER_BATCH
    try:
        # in a log file (a batch job) a bar line every 30 s, not every batch
        interval = 0.1 if sys.stderr.isatty() else 30
        with tqdm(total=end - start, initial=end - start - len(todo), desc=f"shard {shard_index}/{num_shards}", unit="img",
                  mininterval=interval) as bar:
            for batch in iterate_batches(ShardImages(todo, labeler, cfg, weak_label_kind(dataset_name)), batch_size, cfg.DATALOADER.NUM_WORKERS):
                ready = [x for x in batch if "image" in x]
                outputs = iter(labeler(ready) if ready else [])
                for item in batch:
                    _write_item(writer, item, outputs if "image" in item else None, labeler, image_root)
                bar.update(len(batch))
        return writer.finish()
    finally:
        writer.close()


def _write_item(writer: ShardWriter, item: dict, outputs, labeler, image_root: str) -> None:
    record = item["record"]
    if "error" in item:
        logger.warning(f"unreadable image {record['file_name']} (id {record['image_id']}): {item['error']}")
        writer.add(image_entry(record, image_root), "unreadable", [])
        return
    if outputs is None:
        writer.add(image_entry(record, image_root), "no_match", [], skipped_labels=item["skipped"])
        return
    instances = next(outputs).to("cpu")
    # a point inside no proposal, or a scribble no proposal's mask covers (or under MIN_SCORE), labels nothing; the image goes on
    one_each = "weak_points" in item or "weak_scribbles" in item
    skipped = item["skipped"] + (len(item["words"]) - len(set(instances.word_index.tolist())) if one_each else 0)
    category_ids = [labeler.dataset_ids[c] for c in instances.pred_classes.tolist()]
    words = [item["words"][w] for w in instances.word_index.tolist()]
    uncertain = instances.uncertain_masks.numpy() if instances.has("uncertain_masks") else None
    annotations, empty = encode_pseudo_annotations(
        record["image_id"], instances.pred_masks.numpy(), category_ids, instances.scores.tolist(), words, uncertain
    )
    entry = image_entry(record, image_root, item["height"], item["width"])
    writer.add(entry, "labeled" if annotations else "unlabeled", annotations, empty, skipped)
