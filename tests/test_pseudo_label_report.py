"""tools/pseudo_label_report.py on a constructed case whose every match is known."""
import contextlib
import copy
import io
import json
import os
import tempfile
import unittest

import numpy as np
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from tests.helpers import run_script

SIZE = 20


def square(rows, cols):
    m = np.zeros((SIZE, SIZE), dtype=np.uint8, order="F")
    m[rows[0]:rows[1], cols[0]:cols[1]] = 1
    rle = mask_util.encode(m)
    rle["counts"] = rle["counts"].decode()
    return rle


TOP_LEFT, TOP_RIGHT = square((0, 10), (0, 10)), square((0, 10), (10, 20))
BOTTOM_LEFT, BOTTOM_RIGHT = square((10, 20), (0, 10)), square((10, 20), (10, 20))


def ground_truth():
    anns = [  # image 1: a top-left, b bottom-right; image 2: a top-right, b bottom-left, a crowd of b top-left
        (1, 1, TOP_LEFT, 0), (1, 2, BOTTOM_RIGHT, 0), (2, 1, TOP_RIGHT, 0), (2, 2, BOTTOM_LEFT, 0), (2, 2, TOP_LEFT, 1),
    ]
    return {  # GT names its files from another root: drawings use the pseudo file's names (--image-root is theirs)
        "images": [{"id": i, "file_name": f"elsewhere/{i}.png", "height": SIZE, "width": SIZE} for i in (1, 2)],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
        "annotations": [{"id": k, "image_id": i, "category_id": c, "segmentation": m, "area": float(mask_util.area(m)),
                         "bbox": mask_util.toBbox(m).tolist(), "iscrowd": crowd} for k, (i, c, m, crowd) in enumerate(anns, 1)],
    }


def pseudo_labels():
    dets = [
        (1, 1, TOP_LEFT, 0.9),  # right
        (1, 1, TOP_LEFT, 0.8),  # wrong: its ground truth is taken by the 0.9 one
        (1, 2, TOP_RIGHT, 0.7),  # wrong: no b there; image 1's b (bottom right) is missed
        (2, 2, BOTTOM_LEFT, 0.6),  # right; image 2's a is missed
        (2, 2, TOP_LEFT, 0.5),  # on the crowd region: neither right nor wrong
    ]
    return {
        "images": [{"id": i, "file_name": f"{i}.png", "height": SIZE, "width": SIZE} for i in (1, 2)],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
        "annotations": [{"id": k, "image_id": i, "category_id": c, "segmentation": m, "bbox": mask_util.toBbox(m).tolist(),
                         "area": float(mask_util.area(m)), "iscrowd": 0, "score": s} for k, (i, c, m, s) in enumerate(dets, 1)],
    }


def cocoeval_ap50(gt, dets, cat_ids):
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes(copy.deepcopy(dets)), "segm")
        evaluator.params.catIds = cat_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats[1] * 100


def has_detectron2():
    try:
        import detectron2  # noqa: F401
    except ImportError:
        return False
    return True


class TestPseudoLabelQuality(unittest.TestCase):
    def test_matches_counts_and_worst_images(self):
        from xpseudo.evaluation import check_detections
        from xpseudo.evaluation.pseudo_label_quality import pseudo_label_quality

        coco = COCO()
        coco.dataset = ground_truth()
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
        dets = check_detections(pseudo_labels()["annotations"], coco, "segm", "pl", "gt")
        quality = pseudo_label_quality(coco, dets, [1, 2])
        self.assertEqual(sorted(quality.scores_right), [0.6, 0.9])
        self.assertEqual(sorted(quality.scores_wrong), [0.7, 0.8])
        self.assertEqual(quality.per_class[1], {"pseudo": 2, "right": 1, "ground_truth": 2, "precision": 0.5, "recall": 0.5})
        self.assertEqual(quality.per_class[2], {"pseudo": 2, "right": 1, "ground_truth": 2, "precision": 0.5, "recall": 0.5})
        self.assertEqual([(e.image_id, e.right, e.wrong, e.missed) for e in quality.worst_images(5)], [(1, 1, 2, 1), (2, 1, 0, 1)])
        # misses counted for class b only: image 2's missing a is no longer an error there
        only_b = pseudo_label_quality(coco, dets, [1, 2], category_ids=[2])
        self.assertEqual([(e.image_id, e.missed) for e in only_b.worst_images(5)], [(1, 1)])
        self.assertEqual(set(only_b.per_class), {2})


class TestPseudoLabelReportTool(unittest.TestCase):
    def test_writes_every_file_with_the_known_numbers(self):
        with tempfile.TemporaryDirectory() as tmp:
            paths = {}
            for name, data in (("gt", ground_truth()), ("pl", pseudo_labels()), ("split", {"base": ["a"], "novel": ["b"]})):
                paths[name] = os.path.join(tmp, name + ".json")
                with open(paths[name], "w") as f:
                    json.dump(data, f)
            images = os.path.join(tmp, "images")
            os.makedirs(images)
            import cv2

            for i in (1, 2):
                cv2.imwrite(os.path.join(images, f"{i}.png"), np.full((SIZE, SIZE, 3), 40 * i, dtype=np.uint8))
            out = os.path.join(tmp, "report")
            result = run_script("tools/pseudo_label_report.py", "--pseudo", paths["pl"], "--gt", paths["gt"], "--split", paths["split"],
                                "--output", out, "--image-root", images, "--worst", "1")
            self.assertIn(f"wrote {out}/index.md", result.stdout)
            with open(os.path.join(out, "metrics.json")) as f:
                metrics = json.load(f)
            gt, dets = ground_truth(), pseudo_labels()["annotations"]
            self.assertAlmostEqual(metrics["ap"]["AP50_novel"], cocoeval_ap50(gt, dets, [2]), places=6)
            self.assertAlmostEqual(metrics["ap"]["AP50_base"], cocoeval_ap50(gt, dets, [1]), places=6)
            self.assertEqual(metrics["per_class"]["b"], {"pseudo": 2, "right": 1, "ground_truth": 2, "precision": 0.5, "recall": 0.5, "split": "novel"})
            self.assertEqual(metrics["worst_images"], [{"image_id": 1, "right": 1, "wrong": 2, "missed": 1}])
            self.assertEqual(cv2.imread(os.path.join(out, "confidence.png")).shape[2], 3)
            with open(os.path.join(out, "index.md")) as f:
                index = f.read()
            self.assertIn("| b | novel | 2 | 1 | 2 | 50.0 | 50.0 |", index)
            self.assertIn("![confidence](confidence.png)", index)
            if has_detectron2():  # pseudo labels beside ground truth, each upscaled to 256 px
                self.assertIn("| [1](worst/1.png) | 1 | 2 | 1 |", index)
                self.assertEqual(cv2.imread(os.path.join(out, "worst", "1.png")).shape, (256, 2 * 256 + 8, 3))
            else:
                self.assertIn("Not drawn: detectron2 is not installed", index)

    def test_unknown_image_is_an_error_naming_the_file_and_entry(self):
        with tempfile.TemporaryDirectory() as tmp:
            labels = pseudo_labels()
            labels["images"].append({"id": 7, "file_name": "7.png", "height": SIZE, "width": SIZE})
            paths = {}
            for name, data in (("gt", ground_truth()), ("pl", labels), ("split", {"base": ["a"], "novel": ["b"]})):
                paths[name] = os.path.join(tmp, name + ".json")
                with open(paths[name], "w") as f:
                    json.dump(data, f)
            result = run_script("tools/pseudo_label_report.py", "--pseudo", paths["pl"], "--gt", paths["gt"], "--split", paths["split"],
                                "--output", os.path.join(tmp, "report"), check=False)
            self.assertEqual(result.returncode, 2)
            self.assertIn(f"{paths['pl']}: images[2]: id 7 is not an image of {paths['gt']}", result.stderr)
            self.assertFalse(os.path.exists(os.path.join(tmp, "report", "index.md")))


if __name__ == "__main__":
    unittest.main()
