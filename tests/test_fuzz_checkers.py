"""Property-based fuzzing of the file checkers (no detectron2): a valid file with one random
mutation (a wrong type, NaN or infinity, a unicode digit or space, a missing key, a duplicated
entry, a size off by one) is either refused with an InputError naming the file, or accepted; it
never raises anything else and never hangs."""
import copy
import json
import math
import os
import tempfile
import unittest

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.test_bad_input import detections, ground_truth, rle, square
from xpseudo.data.captions import load_coco_captions
from xpseudo.data.split import OvisSplit
from xpseudo.data.weak_labels import check_weak_label_file, weak_label_records
from xpseudo.evaluation import evaluate_by_split, load_coco_gt, load_detections
from xpseudo.pseudo.index_from_json import build_index_from_json
from xpseudo.utils.io import InputError

ODD_VALUES = [None, True, "", "x", "²", "٣", " 1", "1 ", "０", float("nan"), float("inf"), -float("inf"), -1, 0, 1, 2.5, 10**30,
              [], {}, [1], [None], {"counts": "garbage!!", "size": [8, 8]}, "garbage!!", [1, 2, 3, 4], [float("nan")] * 4]
CASES = settings(max_examples=500, deadline=1000, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


def paths_of(document, prefix=()):
    """Every (path, value) inside the document: dict keys and list positions."""
    yield prefix, document
    if isinstance(document, dict):
        for key, value in document.items():
            yield from paths_of(value, prefix + (key,))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            yield from paths_of(value, prefix + (index,))


def mutate(document, choice, kind, value):
    """A copy of ``document`` with one mutation at the ``choice``-th place."""
    document = copy.deepcopy(document)
    places = [p for p, _ in paths_of(document) if p]
    path = places[choice % len(places)]
    parent = document
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if kind == "replace":
        parent[last] = value
    elif kind == "delete":
        del parent[last]
    elif kind == "duplicate" and isinstance(parent, list):
        parent.append(copy.deepcopy(parent[last]))
    elif kind == "off_by_one" and isinstance(parent[last], (int, float)) and not isinstance(parent[last], bool):
        parent[last] = parent[last] + 1
    return document


MUTATIONS = st.tuples(st.integers(0, 10**6), st.sampled_from(["replace", "delete", "duplicate", "off_by_one"]), st.sampled_from(ODD_VALUES))


class CheckerFuzz(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.path = os.path.join(self.tmp.name, "input.json")

    def tearDown(self):
        self.tmp.cleanup()

    def check(self, document, mutation, run):
        with open(self.path, "w") as f:
            json.dump(mutate(document, *mutation), f)  # NaN and infinity as JSON's NaN / Infinity, as Python writes them
        try:
            run(self.path)
        except InputError as e:
            self.assertTrue(str(e).startswith(self.path + ": ") or str(e).startswith(os.path.dirname(self.path)), str(e))


def weak_labels(kind):
    image = {"id": 1, "file_name": "a.png", "height": 8, "width": 8}
    if kind == "tags":
        return {"images": [dict(image, pos_category_ids=[1, 2])]}
    if kind == "boxes":
        return {"images": [image], "annotations": [{"id": 1, "image_id": 1, "category_id": 2, "bbox": [1, 1, 3, 3]}]}
    if kind == "scribbles":
        return {"images": [image], "annotations": [{"id": 1, "image_id": 1, "category_id": 2, "scribble": [[1.5, 2.5], [3.0, 4.0], [6.5, 6.5]]}]}
    return {"images": [image], "annotations": [{"id": 1, "image_id": 1, "category_id": 2, "point_coords": [[2, 2], [6, 6]],
                                                "point_labels": [1, 0]}]}


class TestFuzzCheckers(CheckerFuzz):
    @CASES
    @given(MUTATIONS)
    def test_captions(self, mutation):
        document = {"images": [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "b.png"}],
                    "annotations": [{"image_id": 1, "caption": "two stars"}, {"image_id": 2, "caption": "a ring"}]}
        self.check(document, mutation, load_coco_captions)

    @CASES
    @given(MUTATIONS, st.sampled_from(["tags", "boxes", "points", "scribbles"]))
    def test_weak_labels(self, mutation, kind):
        def run(path):
            data = check_weak_label_file(path, kind, [1, 2])
            weak_label_records(data, kind, "/images", {1: 0, 2: 1})  # what a checked file must allow

        self.check(weak_labels(kind), mutation, run)

    @CASES
    @given(MUTATIONS)
    def test_pseudo_labels(self, mutation):
        document = {"images": [{"id": 1, "file_name": "1.png", "height": 8, "width": 8}], "categories": [{"id": 1, "name": "a"}],
                    "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": rle(square(0, 0)), "bbox": [0, 0, 3, 3],
                                     "area": 9, "score": 0.5}]}
        self.check(document, mutation, lambda path: build_index_from_json(path, path + ".index"))

    @CASES
    @given(MUTATIONS)
    def test_ground_truth(self, mutation):
        def run(path):  # accepted ground truth must also evaluate: COCOeval decodes every mask
            coco = load_coco_gt(path)
            evaluate_by_split(coco, [], OvisSplit(["a"], ["b"]), "segm")

        self.check(ground_truth(), mutation, run)

    @CASES
    @given(MUTATIONS, st.sampled_from(["segm", "bbox"]))
    def test_detections(self, mutation, iou_type):
        gt_path = os.path.join(self.tmp.name, "gt.json")
        with open(gt_path, "w") as f:
            json.dump(ground_truth(), f)
        coco = load_coco_gt(gt_path)

        def run(path):
            results = evaluate_by_split(coco, load_detections(path, coco, iou_type), OvisSplit(["a"], ["b"]), iou_type)
            self.assertTrue(all(isinstance(v, float) and (math.isnan(v) or 0 <= v <= 100) for v in results.values()))

        self.check(detections(), mutation, run)


if __name__ == "__main__":
    unittest.main()
