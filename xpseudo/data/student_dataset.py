"""The student's training set: ground-truth records plus pseudo labels read lazily through their index.

An image in both gets both annotation lists (its unannotated novel objects are then covered by
pseudo masks instead of being taught as background); pseudo annotations carry ``pseudo: True``,
which ``PseudoAwareDatasetMapper`` turns into ``instances.gt_pseudo``. Images only the pseudo labels
have (Conceptual Captions next to Open Images) come after the ground truth, marked ``pseudo_only``.

Items are exactly the records detectron2's ``load_coco_json`` and a merge by file name would give,
but a pseudo-labeled image is read from the JSON file only when the loader asks for it: millions of
them cost each process a few int64 arrays instead of a parsed copy of the file.
"""
import os
from typing import Dict, Iterator, List

import numpy as np
import torch
from detectron2.data.common import DatasetFromList
from detectron2.structures import BoxMode

from xpseudo.pseudo.label_index import PseudoLabelIndex
from xpseudo.utils.io import InputError

from .ovis_datasets import EXTRA_ANNOTATION_KEYS

# what load_coco_json keeps of an annotation (segmentation and bbox_mode are added apart)
_ANNOTATION_KEYS = ("iscrowd", "bbox", "keypoints", "category_id", *EXTRA_ANNOTATION_KEYS)


class PseudoLabelRecords:
    """detectron2 records of a pseudo-label file, decoded one at a time from its index, with
    contiguous category ids and ``pseudo: True`` on every annotation."""

    def __init__(self, index: PseudoLabelIndex, image_root: str, id_map: Dict[int, int]):
        self.index, self.image_root = index, image_root
        self.id_map = dict(id_map)
        self.contiguous_categories = self._map_categories()

    def _map_categories(self) -> np.ndarray:
        """Every annotation row's contiguous category id; an id outside the dataset's classes is an
        error, as when detectron2 loads the file."""
        categories = self.index.categories()
        keys = np.array(sorted(self.id_map), dtype=np.int64)
        values = np.array([self.id_map[k] for k in keys.tolist()], dtype=np.int64)
        found = np.searchsorted(keys, categories).clip(max=max(len(keys) - 1, 0))
        known = keys[found] == categories if len(keys) else np.zeros(len(categories), bool)
        if not known.all():
            row = int(np.argmin(known))
            image = int(np.searchsorted(np.asarray(self.index.columns["annotation_offsets"]), row, side="right")) - 1
            raise InputError(self.index.source, f"an annotation of image {int(self.index.columns['image_id'][image])} has category_id {int(categories[row])}, not a class of the dataset")
        return values[found] if len(keys) else categories

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        image, annotations = self.index.entries(i)
        return {
            "file_name": os.path.join(self.image_root, image["file_name"]),
            "height": image["height"],
            "width": image["width"],
            "image_id": image["id"],
            "annotations": [self._annotation(a) for a in annotations],
        }

    def _annotation(self, ann: dict) -> dict:
        obj = {key: ann[key] for key in _ANNOTATION_KEYS if key in ann}
        if ann.get("segmentation"):
            obj["segmentation"] = ann["segmentation"]  # checked when indexed: an RLE with string counts
        if ann.get("uncertain_segmentation"):
            obj["uncertain_segmentation"] = ann["uncertain_segmentation"]  # the teacher's unsure pixels
        if obj.get("keypoints"):
            obj["keypoints"] = [v if k % 3 == 2 else v + 0.5 for k, v in enumerate(obj["keypoints"])]  # as load_coco_json
        obj["bbox_mode"] = BoxMode.XYWH_ABS
        obj["category_id"] = self.id_map[ann["category_id"]]
        obj["pseudo"] = True
        return obj


class StudentDataset(torch.utils.data.Dataset):
    """Ground-truth records (detectron2's serialized list) followed by the pseudo-only images;
    ``dataset[i]`` is a fresh dict, as detectron2's datasets give."""

    def __init__(self, gt_records: List[dict], pseudo: PseudoLabelRecords):
        self.pseudo = pseudo
        gt_index = {r["file_name"]: i for i, r in enumerate(gt_records)}
        self.matched = np.full(len(gt_records), -1, dtype=np.int64)  # ground-truth item -> pseudo record or -1
        dataset_position = pseudo.index.dataset_positions()
        has_gt = np.zeros(len(pseudo), dtype=bool)
        for start, names in pseudo.index.file_names().blocks():  # a block at a time: millions of names
            for k, name in enumerate(names, start):
                i = gt_index.get(os.path.join(pseudo.image_root, name))
                if i is not None:
                    j = dataset_position[k]
                    self.matched[i], has_gt[j] = j, True
        self.pseudo_only = np.flatnonzero(~has_gt)
        self._gt_categories = [np.asarray([a["category_id"] for a in r.get("annotations", [])], dtype=np.int64) for r in gt_records]
        self.gt = DatasetFromList(gt_records, copy=False)
        self.num_gt = len(gt_records)

    def __len__(self) -> int:
        return self.num_gt + len(self.pseudo_only)

    def __getitem__(self, i: int) -> dict:
        if i >= self.num_gt:
            record = self.pseudo[int(self.pseudo_only[i - self.num_gt])]
            record["pseudo_only"] = True
            return record
        record = self.gt[i]
        record["annotations"] = [dict(a, pseudo=False) for a in record.get("annotations", [])]
        if self.matched[i] >= 0:
            record["annotations"] += self.pseudo[int(self.matched[i])]["annotations"]
        return record

    def pseudo_only_flags(self) -> np.ndarray:
        return np.arange(len(self)) >= self.num_gt

    def category_view(self) -> "CategoryView":
        """What detectron2's ``repeat_factors_from_category_frequency`` reads of the records."""
        return CategoryView(self)

    def categories(self) -> Iterator[np.ndarray]:
        """Each item's contiguous annotation categories, in order."""
        first, end = self.pseudo.index.annotation_ranges()
        pseudo = self.pseudo.contiguous_categories
        for categories, j in zip(self._gt_categories, self.matched.tolist()):
            yield np.concatenate([categories, pseudo[first[j]:end[j]]]) if j >= 0 else categories
        for j in self.pseudo_only.tolist():
            yield pseudo[first[j]:end[j]]


class CategoryView:
    """The records reduced to their annotations' category ids, made on each pass (detectron2 reads
    them twice) rather than held: ``{"annotations": [{"category_id": c}, ...]}`` per item."""

    def __init__(self, dataset: StudentDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self):
        for categories in self.dataset.categories():
            yield {"annotations": [{"category_id": c} for c in categories.tolist()]}
