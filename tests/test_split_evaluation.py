import contextlib
import copy
import io
import json
import os
import tempfile
import unittest

import cv2
import numpy as np
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from xpseudo.data.split import OvisSplit
from xpseudo.evaluation import check_detections, evaluate_by_split, load_coco_gt, load_detections

from tests.helpers import make_shapes, run_script


def noisy_detections(gt: dict, seed: int = 0):
    """Detections made from the ground truth: masks eroded or dilated, some missed, some with the
    wrong class, some spurious; random scores. Every split gets a non-trivial AP."""
    rng = np.random.default_rng(seed)
    cat_ids = [c["id"] for c in gt["categories"]]
    sizes = {im["id"]: (im["height"], im["width"]) for im in gt["images"]}
    detections = []
    for ann in gt["annotations"]:
        if rng.random() < 0.15:
            continue
        mask = mask_util.decode(ann["segmentation"])
        kernel = np.ones((int(rng.integers(2, 6)),) * 2, np.uint8)
        mask = cv2.erode(mask, kernel) if rng.random() < 0.5 else cv2.dilate(mask, kernel)
        category = ann["category_id"] if rng.random() < 0.8 else int(rng.choice(cat_ids))
        detections.append((ann["image_id"], category, mask))
    for image_id, (h, w) in sizes.items():
        if rng.random() < 0.5:
            mask = np.zeros((h, w), np.uint8)
            x, y = rng.integers(0, w - 20), rng.integers(0, h - 20)
            mask[y : y + 20, x : x + 20] = 1
            detections.append((image_id, int(rng.choice(cat_ids)), mask))
    results = []
    for image_id, category, mask in detections:
        if mask.sum() == 0:
            continue
        rle = mask_util.encode(np.asfortranarray(mask))
        rle["counts"] = rle["counts"].decode()
        results.append({"image_id": image_id, "category_id": category, "score": float(rng.random()),
                        "segmentation": rle, "bbox": [float(v) for v in mask_util.toBbox(rle)]})
    return results


def pycocotools_stats(gt_path, detections, iou_type, cat_ids):
    """AP, AP50, AP75 in percent from a COCOeval restricted to ``cat_ids``, run the documented way."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(gt_path)
        dets = copy.deepcopy(detections)
        if iou_type == "segm":
            for d in dets:
                d.pop("bbox")
        coco_eval = COCOeval(coco_gt, coco_gt.loadRes(dets), iou_type)
        coco_eval.params.catIds = cat_ids
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return [100 * s for s in coco_eval.stats[:3]]


class TestSplitEvaluation(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        make_shapes(cls.tmp.name, num_train=5, num_val=40)
        cls.gt_path = os.path.join(cls.tmp.name, "annotations", "instances_val.json")
        cls.split_path = os.path.join(cls.tmp.name, "split.json")
        with open(cls.gt_path) as f:
            cls.gt = json.load(f)
        cls.detections = noisy_detections(cls.gt)
        cls.dt_path = os.path.join(cls.tmp.name, "dt.json")
        with open(cls.dt_path, "w") as f:
            json.dump(cls.detections, f)
        cls.split = OvisSplit.from_file(cls.split_path)
        cls.ids = {c["name"]: c["id"] for c in cls.gt["categories"]}

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_equals_pycocotools_restricted_per_split(self):
        coco_gt = load_coco_gt(self.gt_path)
        for iou_type in ("segm", "bbox"):
            results = evaluate_by_split(coco_gt, check_detections(self.detections, coco_gt, iou_type, "dt", "gt"), self.split, iou_type)
            for suffix, names in (("", list(self.ids)), ("_base", self.split.base), ("_novel", self.split.novel)):
                expected = pycocotools_stats(self.gt_path, self.detections, iou_type, sorted(self.ids[n] for n in names))
                got = [results["AP" + suffix], results["AP50" + suffix], results["AP75" + suffix]]
                np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9, err_msg=f"{iou_type}{suffix}")
                self.assertTrue(5 < expected[1] < 95, f"{iou_type}{suffix} AP50 {expected[1]} should be informative")

    def test_constrained_evaluation_uses_one_split(self):
        coco_gt = load_coco_gt(self.gt_path)
        novel_ids = sorted(self.ids[n] for n in self.split.novel)
        results = evaluate_by_split(coco_gt, check_detections(self.detections, coco_gt, "segm", "dt", "gt"), self.split, "segm", cat_ids=novel_ids)
        self.assertNotIn("AP_base", results)
        self.assertAlmostEqual(results["AP"], results["AP_novel"], delta=1e-12)
        self.assertAlmostEqual(results["AP"], pycocotools_stats(self.gt_path, self.detections, "segm", novel_ids)[0], delta=1e-9)

    def test_no_detections_score_zero(self):
        results = evaluate_by_split(load_coco_gt(self.gt_path), [], self.split, "segm")
        self.assertEqual((results["AP"], results["AP50_base"], results["AP50_novel"]), (0.0, 0.0, 0.0))

    def test_instances_file_with_scores_and_polygons(self):
        coco_gt = load_coco_gt(self.gt_path)
        square = {"image_id": self.gt["images"][0]["id"], "category_id": self.ids["square"], "score": 0.5,
                  "segmentation": [[10, 10, 30, 10, 30, 30, 10, 30]], "bbox": [10, 10, 20, 20], "id": 1}
        path = os.path.join(self.tmp.name, "instances_dt.json")
        with open(path, "w") as f:
            json.dump({"images": self.gt["images"], "categories": self.gt["categories"], "annotations": [square]}, f)
        detections = load_detections(path, coco_gt, "segm")
        self.assertEqual(len(detections), 1)
        self.assertEqual(int(mask_util.area(detections[0]["segmentation"])), 400)

    def test_tool_writes_json(self):
        out = os.path.join(self.tmp.name, "metrics.json")
        result = run_script("tools/evaluate_ovis.py", "--gt", self.gt_path, "--dt", self.dt_path, "--split", self.split_path, "--iou-type", "bbox", "--json-out", out)
        self.assertIn("novel", result.stdout)
        with open(out) as f:
            metrics = json.load(f)
        self.assertEqual(list(metrics), ["bbox"])
        expected = pycocotools_stats(self.gt_path, self.detections, "bbox", sorted(self.ids[n] for n in self.split.novel))
        self.assertAlmostEqual(metrics["bbox"]["AP50_novel"], expected[1], delta=1e-9)
        for key in ("AP", "AP50", "AP75", "AP_base", "AP50_base", "AP_novel", "AP50_novel"):
            self.assertIn(key, metrics["bbox"])

    def test_bad_input_names_file_and_item(self):
        d = self.tmp.name

        def write(name, content):
            path = os.path.join(d, name)
            with open(path, "w") as f:
                f.write(content if isinstance(content, str) else json.dumps(content))
            return path

        good = dict(self.detections[0])
        cases = [
            (["--gt", os.path.join(d, "nope.json")], "nope.json: ground-truth file does not exist"),
            (["--dt", write("bad.json", "[{")], "bad.json: malformed JSON"),
            (["--split", write("s.json", {"base": ["circle"], "novel": ["unicorn"]})], "s.json: novel category 'unicorn' is not a category of"),
            (["--dt", write("img.json", [dict(good, image_id=999999)])], "img.json: detection 0: image_id 999999 is not an image of"),
            (["--dt", write("cat.json", [good, dict(good, category_id=77)])], "cat.json: detection 1: category_id 77 is not a category of"),
            (["--dt", write("score.json", [{k: v for k, v in good.items() if k != "score"}])], "score.json: detection 0 lacks ['score']"),
        ]
        for override, message in cases:
            args = {"--gt": self.gt_path, "--dt": self.dt_path, "--split": self.split_path}
            args.update(dict(zip(override[::2], override[1::2])))
            result = run_script("tools/evaluate_ovis.py", *[x for kv in args.items() for x in kv], check=False)
            self.assertNotEqual(result.returncode, 0)
            self.assertIn(message, result.stderr)
            self.assertNotIn("Traceback", result.stderr)
