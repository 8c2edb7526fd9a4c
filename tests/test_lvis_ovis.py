import json
import os
import tempfile
import unittest

import numpy as np

from tests.helpers import requires_detectron2, run_script

CATEGORIES = [  # ids need not be 1..K: registration maps them through the vocabulary
    {"id": 2, "name": "tabby_cat", "synonyms": ["tabby_cat", "tabby"], "frequency": "f", "synset": "a.n.01", "def": "", "image_count": 2, "instance_count": 2},
    {"id": 5, "name": "bow_(weapon)", "synonyms": ["bow_(weapon)"], "frequency": "c", "synset": "b.n.01", "def": "", "image_count": 1, "instance_count": 1},
    {"id": 9, "name": "yak", "synonyms": ["yak"], "frequency": "r", "synset": "c.n.01", "def": "", "image_count": 2, "instance_count": 2},
]


def square(x, y, size):
    return {"segmentation": [[x, y, x + size, y, x + size, y + size, x, y + size]], "bbox": [x, y, size, size], "area": size * size}


def tiny_lvis():
    images = [
        {"id": i, "height": 40, "width": 40, "coco_url": f"http://images.cocodataset.org/{folder}/{i:012d}.jpg",
         "neg_category_ids": neg, "not_exhaustive_category_ids": []}
        for i, folder, neg in ((1, "train2017", [5]), (2, "val2017", [9]), (3, "train2017", []))
    ]
    annotations = [
        dict(square(2, 2, 10), id=1, image_id=1, category_id=2),
        dict(square(20, 20, 12), id=2, image_id=1, category_id=9),
        dict(square(5, 20, 14), id=3, image_id=2, category_id=5),
        dict(square(4, 4, 16), id=4, image_id=3, category_id=9),
        dict(square(24, 2, 8), id=5, image_id=3, category_id=2),
    ]
    return {"info": {}, "licenses": [], "images": images, "annotations": annotations, "categories": [dict(c) for c in CATEGORIES]}


class TestLvisMetadata(unittest.TestCase):
    def test_vocabulary_and_split_from_an_lvis_file(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "lvis_v1_val.json")
            with open(path, "w") as f:
                json.dump(tiny_lvis(), f)
            result = run_script("datasets/make_lvis_metadata.py", "--lvis-json", path, "--output-dir", tmp)
            self.assertIn("3 categories: 2 base (frequent + common), 1 novel (rare)", result.stdout)
            with open(os.path.join(tmp, "lvis_v1_vocabulary.json")) as f:
                self.assertEqual(json.load(f), [{k: c[k] for k in ("id", "name", "synonyms", "frequency")} for c in CATEGORIES])
            with open(os.path.join(tmp, "lvis_v1_ovis_split.json")) as f:
                self.assertEqual(json.load(f), {"base": ["tabby_cat", "bow_(weapon)"], "novel": ["yak"]})

    def test_shipped_files_have_lvis_v1_counts(self):
        from xpseudo.data.metadata_files import metadata_file
        from xpseudo.data.split import OvisSplit
        from xpseudo.text import Vocabulary

        vocabulary = Vocabulary.from_file(metadata_file("lvis_v1_vocabulary.json"))
        split = OvisSplit.from_file(metadata_file("lvis_v1_ovis_split.json"))
        self.assertEqual((len(vocabulary), len(split.base), len(split.novel)), (1203, 866, 337))
        self.assertEqual(vocabulary.ids, list(range(1, 1204)))


class TestEvaluateOvisOnLvis(unittest.TestCase):
    def test_tool_equals_lvis_eval(self):
        import pycocotools.mask as mask_util
        from lvis import LVIS, LVISEval, LVISResults

        with tempfile.TemporaryDirectory() as tmp:
            gt_path, dt_path, out = (os.path.join(tmp, n) for n in ("lvis_v1_val.json", "dt.json", "out.json"))
            with open(gt_path, "w") as f:
                json.dump(tiny_lvis(), f)
            detections = []
            for image_id, category_id, (x, y, size), score in (
                (1, 2, (2, 2, 10), 0.9), (1, 9, (22, 22, 10), 0.8), (2, 9, (0, 0, 10), 0.95), (2, 5, (5, 20, 14), 0.6), (3, 9, (4, 4, 16), 0.5),
            ):
                mask = np.zeros((40, 40), np.uint8, order="F")
                mask[y:y + size, x:x + size] = 1
                rle = mask_util.encode(mask)
                detections.append({"image_id": image_id, "category_id": category_id, "score": score,
                                   "segmentation": {"size": [40, 40], "counts": rle["counts"].decode()}})
            with open(dt_path, "w") as f:
                json.dump(detections, f)
            result = run_script("tools/evaluate_ovis.py", "--gt", gt_path, "--dt", dt_path, "--json-out", out)
            self.assertIn("LVIS segm: AP ", result.stdout)
            with open(out) as f:
                reported = json.load(f)["segm"]
            from xpseudo.evaluation.lvis_compat import patch_numpy_for_lvis

            patch_numpy_for_lvis()
            gt = LVIS(gt_path)
            lvis_eval = LVISEval(gt, LVISResults(gt, detections, max_dets=300), "segm")
            lvis_eval.run()
            expected = lvis_eval.get_results()
            for metric in ("AP", "AP50", "AP75", "APr", "APc", "APf"):
                self.assertAlmostEqual(reported[metric], expected[metric] * 100, places=6, msg=metric)
            self.assertGreater(reported["APr"], 0)
            self.assertLess(reported["APr"], 100)  # a higher-scored wrong yak on image 2 (a negative image)

    def test_coco_ground_truth_still_needs_a_split(self):
        with tempfile.TemporaryDirectory() as tmp:
            gt = tiny_lvis()
            for c in gt["categories"]:
                del c["frequency"]
            gt_path = os.path.join(tmp, "gt.json")
            with open(gt_path, "w") as f:
                json.dump(gt, f)
            result = run_script("tools/evaluate_ovis.py", "--gt", gt_path, "--dt", gt_path, check=False)
            self.assertIn("not an LVIS file (no category 'frequency'), so --split is needed", result.stderr)


@requires_detectron2
class TestLvisOvisDataset(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.json_file = os.path.join(self.tmp.name, "lvis_v1_val.json")
        with open(self.json_file, "w") as f:
            json.dump(tiny_lvis(), f)
        run_script("datasets/make_lvis_metadata.py", "--lvis-json", self.json_file, "--output-dir", self.tmp.name)
        self.names = []

    def tearDown(self):
        from detectron2.data import DatasetCatalog, MetadataCatalog

        for name in self.names:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        self.tmp.cleanup()

    def register(self, name, annotations):
        from xpseudo.data.lvis_ovis import register_lvis_ovis_dataset

        self.names.append(name)
        return register_lvis_ovis_dataset(
            name, json_file=self.json_file, image_root=os.path.join(self.tmp.name, "coco"), annotations=annotations,
            split_file=os.path.join(self.tmp.name, "lvis_v1_ovis_split.json"),
            vocabulary_file=os.path.join(self.tmp.name, "lvis_v1_vocabulary.json"),
        )

    def test_base_annotations_only(self):
        from detectron2.data import DatasetCatalog

        metadata = self.register("_test_lvis_base", "base")
        self.assertEqual(metadata.thing_classes, ["tabby_cat", "bow_(weapon)", "yak"])
        self.assertEqual((metadata.base_class_ids, metadata.novel_class_ids), ([0, 1], [2]))
        records = DatasetCatalog.get("_test_lvis_base")
        self.assertEqual([r["file_name"] for r in records], [
            os.path.join(self.tmp.name, "coco", "train2017", "000000000001.jpg"),
            os.path.join(self.tmp.name, "coco", "val2017", "000000000002.jpg"),
            os.path.join(self.tmp.name, "coco", "train2017", "000000000003.jpg"),
        ])
        self.assertEqual([[a["category_id"] for a in r["annotations"]] for r in records], [[0], [1], [0]])
        self.register("_test_lvis_all", "all")
        self.assertEqual([[a["category_id"] for a in r["annotations"]] for r in DatasetCatalog.get("_test_lvis_all")], [[0, 2], [1], [2, 0]])

    def test_evaluation_equals_lvis_eval(self):
        import pycocotools.mask as mask_util
        import torch
        from detectron2.structures import Boxes, Instances
        from lvis import LVIS, LVISEval, LVISResults

        from detectron2.config import get_cfg

        from xpseudo.config import add_xpseudo_config
        from xpseudo.engine.trainer import XPMTrainer

        self.register("_test_lvis_val", "all")
        # (image, contiguous class, box x0 y0 x1 y1, score): hits, a shifted hit, a wrong class, a miss
        detections = {
            1: [(0, (2, 2, 12, 12), 0.9), (2, (21, 21, 33, 33), 0.8), (1, (2, 2, 12, 12), 0.7)],
            2: [(1, (5, 20, 19, 34), 0.6), (2, (0, 0, 10, 10), 0.95)],
            3: [(2, (4, 4, 20, 20), 0.5), (0, (30, 30, 38, 38), 0.4)],
        }
        cfg = get_cfg()
        add_xpseudo_config(cfg)
        cfg.MODEL.MASK_ON, cfg.OUTPUT_DIR = True, self.tmp.name
        evaluator = XPMTrainer.build_evaluator(cfg, "_test_lvis_val")
        evaluator.reset()
        direct = []
        lvis_ids = [2, 5, 9]
        for image_id, found in detections.items():
            instances = Instances((40, 40))
            instances.pred_boxes = Boxes(torch.tensor([box for _, box, _ in found], dtype=torch.float32))
            instances.scores = torch.tensor([score for _, _, score in found])
            instances.pred_classes = torch.tensor([c for c, _, _ in found])
            masks = torch.zeros(len(found), 40, 40, dtype=torch.bool)
            for i, (_, (x0, y0, x1, y1), _) in enumerate(found):
                masks[i, y0:y1, x0:x1] = True
            instances.pred_masks = masks
            evaluator.process([{"image_id": image_id}], [{"instances": instances}])
            for i, (c, (x0, y0, x1, y1), score) in enumerate(found):
                rle = mask_util.encode(np.asfortranarray(masks[i].numpy().astype(np.uint8)))
                rle["counts"] = rle["counts"].decode()
                direct.append({"image_id": image_id, "category_id": lvis_ids[c], "bbox": [x0, y0, x1 - x0, y1 - y0],
                               "score": score, "segmentation": rle})
        results = evaluator.evaluate()
        gt = LVIS(self.json_file)
        for iou_type, task in (("bbox", "bbox"), ("segm", "segm")):
            lvis_eval = LVISEval(gt, LVISResults(gt, [dict(d) for d in direct], max_dets=300), iou_type)
            lvis_eval.run()
            expected = lvis_eval.get_results()
            for metric in ("AP", "AP50", "APr", "APc", "APf"):
                self.assertAlmostEqual(results[task][metric], expected[metric] * 100, places=4, msg=f"{task} {metric}")
        self.assertGreater(results["segm"]["APr"], 0)
        self.assertLess(results["segm"]["APc"], 100)


if __name__ == "__main__":
    unittest.main()
