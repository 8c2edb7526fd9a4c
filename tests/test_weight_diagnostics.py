"""Which per-object weight tells right pseudo objects from wrong ones: the AUROC math, the
right/wrong matching, the weights' own math, and tools/student_weight_report.py end to end."""
import itertools
import json
import os
import tempfile
import unittest

import numpy as np
import torch
from pycocotools import mask as mask_util

from tests.helpers import make_shapes, requires_detectron2, run_script, write_shape_embeddings
from xpseudo.evaluation.weight_diagnostics import auroc, relative_to_class_mean, right_objects
from xpseudo.losses.noise_aware import class_relative_signal, class_signal_sums, mask_agreement, signal_loss_weights, updated_class_means


def pairwise_auroc(scores, positive):
    """The definition: over every (positive, negative) pair, 1 if the positive scores higher, a half on a tie."""
    pairs = [(p, n) for p, n in itertools.product(np.flatnonzero(positive), np.flatnonzero(~np.asarray(positive)))]
    return sum(1.0 if scores[p] > scores[n] else 0.5 if scores[p] == scores[n] else 0.0 for p, n in pairs) / len(pairs)


class TestAuroc(unittest.TestCase):
    def test_by_hand_and_against_every_pair(self):
        self.assertAlmostEqual(auroc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]), 0.75)
        self.assertAlmostEqual(auroc([1, 1, 1], [True, False, False]), 0.5)  # ties only
        self.assertTrue(np.isnan(auroc([0.2, 0.3], [True, True])))  # no wrong object
        rng = np.random.default_rng(0)
        for _ in range(20):
            scores = rng.integers(0, 6, size=30).astype(float)  # many ties
            positive = rng.random(30) < 0.4
            self.assertAlmostEqual(auroc(scores, positive), pairwise_auroc(scores, positive), places=12)


def rle(mask):
    return mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))


def decode(segmentation, height, width):
    if isinstance(segmentation, list):
        segmentation = mask_util.merge(mask_util.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation.get("counts"), list):
        segmentation = mask_util.frPyObjects(segmentation, height, width)
    return mask_util.decode(segmentation).astype(bool)


class TestRightObjects(unittest.TestCase):
    def test_same_class_and_iou_at_least_a_half(self):
        truth = np.zeros((20, 20), bool)
        truth[0:10, 0:10] = True  # 100 pixels
        half = np.zeros((20, 20), bool)
        half[0:10, 0:5] = True  # IoU 0.5 exactly
        less = np.zeros((20, 20), bool)
        less[0:10, 0:4] = True  # IoU 0.4
        gt = [{"category_id": 1, "segmentation": rle(truth)}]
        pseudo = [{"category_id": 1, "segmentation": rle(half)}, {"category_id": 1, "segmentation": rle(less)},
                  {"category_id": 2, "segmentation": rle(truth)}]  # the right mask under another class
        self.assertEqual(right_objects(pseudo, gt, 20, 20).tolist(), [True, False, False])


class TestSignalWeights(unittest.TestCase):
    def test_mask_agreement_is_the_iou_of_the_positive_logits(self):
        logits = torch.tensor([[[2.0, -1.0], [0.5, -3.0]], [[-1.0, -1.0], [-1.0, -1.0]]])
        targets = torch.tensor([[[True, True], [False, False]], [[False, False], [False, False]]])
        # first: predicted {(0,0), (1,0)}, target {(0,0), (0,1)}: 1 / 3; second: both empty
        self.assertTrue(torch.allclose(mask_agreement(logits, targets), torch.tensor([1 / 3, 1.0])))

    def test_object_mean_and_warm_start(self):
        signal = torch.tensor([0.2, 0.6, 0.9])
        objects = torch.tensor([4, 4, 7])
        self.assertTrue(torch.allclose(signal_loss_weights(signal, objects), torch.tensor([0.4, 0.4, 0.9])))
        self.assertTrue(torch.allclose(signal_loss_weights(signal, objects, warmup=0.0), torch.ones(3)))
        self.assertTrue(torch.allclose(signal_loss_weights(signal, None, warmup=0.5), torch.tensor([0.6, 0.8, 0.95])))

    def test_class_means_running_and_relative(self):
        means = torch.full((3,), float("nan"))
        sums = class_signal_sums(torch.tensor([0.2, 0.6, 0.9]), torch.tensor([0, 0, 2]), 3)
        self.assertTrue(torch.allclose(sums, torch.tensor([[0.8, 0.0, 0.9], [2.0, 0.0, 1.0]])))
        means = updated_class_means(means, sums, momentum=0.75)  # first sight sets the mean
        self.assertTrue(torch.allclose(means[[0, 2]], torch.tensor([0.4, 0.9])))
        self.assertTrue(torch.isnan(means[1]))
        means = updated_class_means(means, class_signal_sums(torch.tensor([0.8]), torch.tensor([0]), 3), momentum=0.75)
        self.assertAlmostEqual(means[0].item(), 0.75 * 0.4 + 0.25 * 0.8, places=6)
        self.assertAlmostEqual(means[2].item(), 0.9, places=6)
        # over its class mean, capped; 1 for an unseen class or a zero mean
        means = torch.tensor([0.5, float("nan"), 0.0])
        relative = class_relative_signal(torch.tensor([0.25, 0.9, 0.3, 0.1]), torch.tensor([0, 0, 1, 2]), means, max_weight=1.5)
        self.assertTrue(torch.allclose(relative, torch.tensor([0.5, 1.5, 1.0, 1.0])))

    def test_relative_to_class_mean_keeps_the_order_within_each_class(self):
        values = np.array([0.1, 0.3, 0.02, 0.06, 0.0, 0.0])
        classes = np.array(["a", "a", "b", "b", "c", "c"])
        self.assertTrue(np.allclose(relative_to_class_mean(values, classes), [0.5, 1.5, 0.5, 1.5, 1.0, 1.0]))


@requires_detectron2
class TestStudentWeightReport(unittest.TestCase):
    def test_right_and_wrong_objects_counted_and_a_perfect_weight_found(self):
        """A pseudo-label file made from the ground truth: every other object moved off its place
        (wrong), scores 0.9 for the right ones and 0.1 for the wrong: the teacher confidence then
        has AUROC 1, and the counts are the file's own."""
        from detectron2.checkpoint import DetectionCheckpointer
        from detectron2.modeling import build_model

        import xpseudo.modeling  # noqa: F401
        from xpseudo.config import load_config

        with tempfile.TemporaryDirectory() as tmp:
            make_shapes(os.path.join(tmp, "shapes"), num_train=6, num_val=2, image_size=96)
            emb = write_shape_embeddings(os.path.join(tmp, "emb.npy"))
            opts = ["MODEL.XPM.TEXT_EMBEDDINGS", emb, "MODEL.XPM.EMBEDDING_DIM", "32"]
            config = "configs/shapes/xpm_student_R18_FPN.yaml"
            weights = os.path.join(tmp, "student.pth")
            from xpseudo.data.builtin import register_all_builtin

            register_all_builtin(tmp)
            try:
                torch.manual_seed(0)
                DetectionCheckpointer(build_model(load_config(config, opts)), save_dir=tmp).save("student")  # a random-init student
            finally:
                register_all_builtin()
            gt_path = os.path.join(tmp, "shapes", "annotations", "instances_train_all.json")
            with open(gt_path) as f:
                gt = json.load(f)
            novel = set(json.load(open(os.path.join(tmp, "shapes", "split.json")))["novel"])
            novel_ids = {c["id"] for c in gt["categories"] if c["name"] in novel}
            annotations, right = [], {"base": [0, 0], "novel": [0, 0]}
            for i, a in enumerate(gt["annotations"]):
                image = next(im for im in gt["images"] if im["id"] == a["image_id"])
                h, w = image["height"], image["width"]
                mask = decode(a["segmentation"], h, w)
                wrong = i % 2 == 1
                if wrong:  # moved sideways by more than its width
                    shift = int(a["bbox"][2]) + 2
                    mask = np.roll(mask, shift if a["bbox"][0] + a["bbox"][2] + shift < w else -shift, axis=1)
                    same_class = [decode(g["segmentation"], h, w) for g in gt["annotations"]
                                  if g["image_id"] == a["image_id"] and g["category_id"] == a["category_id"]]
                    if max(mask_util.iou([rle(mask)], [rle(m) for m in same_class], [0] * len(same_class))[0]) >= 0.5:
                        continue  # moved onto another object of its class: not surely wrong
                encoded = rle(mask)
                box = [float(v) for v in mask_util.toBbox(encoded)]
                encoded["counts"] = encoded["counts"].decode()
                annotations.append(dict(id=len(annotations) + 1, image_id=a["image_id"], category_id=a["category_id"], segmentation=encoded,
                                        bbox=box, area=int(mask.sum()), iscrowd=0, score=0.1 if wrong else 0.9))
                right["novel" if a["category_id"] in novel_ids else "base"][1 if wrong else 0] += 1
            pseudo = os.path.join(tmp, "pseudo_labels.json")
            with open(pseudo, "w") as f:
                json.dump({"images": gt["images"], "categories": gt["categories"], "annotations": annotations}, f)
            out = os.path.join(tmp, "weights.json")
            result = run_script("tools/student_weight_report.py", "--config-file", config, "--pseudo", pseudo, "--gt", gt_path,
                                "--split", os.path.join(tmp, "shapes", "split.json"), "--image-root", os.path.join(tmp, "shapes", "images", "train"),
                                "--json-out", out, *opts, "MODEL.WEIGHTS", weights, env={"DETECTRON2_DATASETS": tmp})
            with open(out) as f:
                report = json.load(f)
            self.assertEqual(report["right_wrong"]["base"], right["base"])
            self.assertEqual(report["right_wrong"]["novel"], right["novel"])
            self.assertEqual(report["auroc"]["teacher confidence"]["all"], 1.0)
            for name, values in report["auroc"].items():
                self.assertTrue(0.0 <= values["all"] <= 1.0, name)
            self.assertIn("1 / mean sigma", result.stdout)
