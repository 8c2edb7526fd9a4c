import json
import os
import tempfile
import unittest

import numpy as np
from pycocotools import mask as mask_util

from tests.helpers import HAS_DETECTRON2, make_shapes, requires_detectron2
from tests.test_split_evaluation import noisy_detections, pycocotools_stats

if HAS_DETECTRON2:
    import torch
    from detectron2.structures import Boxes, Instances

    from xpseudo.data.builtin import register_all_builtin
    from xpseudo.evaluation.ovis_evaluator import OVISEvaluator


def to_outputs(detections, gt, id_map):
    """detectron2 model outputs (Instances per image) holding ``detections``."""
    per_image = {im["id"]: [] for im in gt["images"]}
    for d in detections:
        if d["category_id"] in id_map:
            per_image[d["image_id"]].append(d)
    inputs, outputs = [], []
    for im in gt["images"]:
        dets = per_image[im["id"]]
        instances = Instances((im["height"], im["width"]))
        boxes = np.array([d["bbox"] for d in dets], dtype=np.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        instances.pred_boxes = Boxes(torch.from_numpy(boxes))
        instances.scores = torch.tensor([d["score"] for d in dets], dtype=torch.float32)
        instances.pred_classes = torch.tensor([id_map[d["category_id"]] for d in dets], dtype=torch.long)
        masks = [mask_util.decode(d["segmentation"]).astype(bool) for d in dets]
        instances.pred_masks = torch.from_numpy(np.stack(masks)) if masks else torch.zeros(0, im["height"], im["width"], dtype=torch.bool)
        inputs.append({"image_id": im["id"]})
        outputs.append({"instances": instances})
    return inputs, outputs


@requires_detectron2
class TestOVISEvaluator(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        make_shapes(os.path.join(cls.tmp.name, "shapes"), num_train=2, num_val=30)
        register_all_builtin(cls.tmp.name)
        cls.gt_path = os.path.join(cls.tmp.name, "shapes", "annotations", "instances_val.json")
        with open(cls.gt_path) as f:
            cls.gt = json.load(f)
        # float32 scores, as a model produces them
        cls.detections = [dict(d, score=float(np.float32(d["score"]))) for d in noisy_detections(cls.gt, seed=1)]

    @classmethod
    def tearDownClass(cls):
        register_all_builtin()
        cls.tmp.cleanup()

    def evaluate(self, dataset):
        from detectron2.data import MetadataCatalog

        output_dir = os.path.join(self.tmp.name, "inference", dataset)
        evaluator = OVISEvaluator(dataset, distributed=False, output_dir=output_dir)
        evaluator.reset()
        evaluator.process(*to_outputs(self.detections, self.gt, MetadataCatalog.get(dataset).thing_dataset_id_to_contiguous_id))
        return evaluator.evaluate(), output_dir

    def test_generalized_split_metrics_and_results_file(self):
        results, output_dir = self.evaluate("shapes_val")
        with open(os.path.join(output_dir, "results.json")) as f:
            written = json.load(f)
        self.assertEqual(set(written), {"bbox", "segm"})
        self.assertEqual(written["segm"]["AP50_novel"], results["segm"]["AP50_novel"])
        ids = {c["name"]: c["id"] for c in self.gt["categories"]}
        novel = sorted(ids[n] for n in ("star", "cross", "crescent"))
        base = sorted(ids[n] for n in ("circle", "square", "triangle", "hexagon", "ring"))
        for task in ("bbox", "segm"):
            for suffix, cats in (("_novel", novel), ("_base", base), ("", base + novel)):
                expected = pycocotools_stats(self.gt_path, self.detections, task, cats)
                np.testing.assert_allclose([results[task]["AP" + suffix], results[task]["AP50" + suffix]], expected[:2], atol=1e-9)

    def test_constrained_dataset_evaluates_its_split_only(self):
        results, _ = self.evaluate("shapes_val_novel")
        self.assertNotIn("AP_base", results["segm"])
        ids = {c["name"]: c["id"] for c in self.gt["categories"]}
        novel_only = [d for d in self.detections if d["category_id"] in {ids["star"], ids["cross"], ids["crescent"]}]
        expected = pycocotools_stats(self.gt_path, novel_only, "segm", sorted(ids[n] for n in ("star", "cross", "crescent")))
        np.testing.assert_allclose([results["segm"]["AP"], results["segm"]["AP50_novel"]], expected[:2], atol=1e-9)
