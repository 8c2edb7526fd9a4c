import copy
import json
import os
import tempfile
import unittest

import numpy as np

from tests.helpers import HAS_DETECTRON2, REPO, RegisteredShapes, requires_detectron2

if HAS_DETECTRON2:
    import torch
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model
    from detectron2.structures import BitMasks, Boxes, Instances
    from detectron2.utils.events import EventStorage

    import xpseudo.modeling  # noqa: F401
    from xpseudo.config import add_xpseudo_config
    from xpseudo.engine.hooks import DropFrozenGradients
    from xpseudo.utils.io import InputError



def student_cfg(embeddings, **overrides):
    cfg = get_cfg()
    add_xpseudo_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs/shapes/xpm_student_R18_FPN.yaml"))
    cfg.MODEL.XPM.TEXT_EMBEDDINGS = embeddings
    cfg.MODEL.XPM.EMBEDDING_DIM = 32
    cfg.merge_from_list([x for kv in overrides.items() for x in kv])
    return cfg


def image_with(classes, pseudo, size=96):
    instances = Instances((size, size))
    boxes = torch.tensor([[8.0 + 22 * i, 10.0, 28.0 + 22 * i, 44.0] for i in range(len(classes))]).reshape(-1, 4)
    masks = torch.zeros(len(classes), size, size, dtype=torch.bool)
    for i, b in enumerate(boxes.long()):
        masks[i, b[1] : b[3], b[0] : b[2]] = True
    instances.gt_boxes = Boxes(boxes)
    instances.gt_classes = torch.tensor(classes, dtype=torch.long)
    instances.gt_masks = BitMasks(masks)
    instances.gt_pseudo = torch.tensor(pseudo, dtype=torch.bool)
    return {"image": torch.rand(3, size, size) * 255, "height": size, "width": size, "instances": instances}


@requires_detectron2
class TestXPMStudent(RegisteredShapes, unittest.TestCase):
    def batch(self):
        return [image_with([0, 6, 5], [False, True, True]), image_with([], []), image_with([7, 2], [True, False])]

    def test_forward_backward_mixing_gt_pseudo_and_empty_images(self):
        torch.manual_seed(0)
        model = build_model(student_cfg(self.embeddings))
        model.train()
        self.assertEqual(model.roi_heads.num_classes, 8)  # trained on all classes
        with EventStorage() as storage:
            losses = model(self.batch())
            self.assertEqual(set(losses), {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg", "loss_mask"})
            self.assertTrue(all(torch.isfinite(v) for v in losses.values()))
            sum(losses.values()).backward()
            self.assertIn("noise_aware/pseudo_sigma", storage.latest())
            self.assertIn("noise_aware/gt_sigma", storage.latest())
        self.assertGreater(model.roi_heads.mask_head.sigma[3].weight.grad.abs().sum().item(), 0)
        self.assertGreater(model.roi_heads.box_predictor.projection.weight.grad.abs().sum().item(), 0)
        # the sigma branch sees detached features: the mask tower gets no gradient through sigma
        model.zero_grad()
        with EventStorage():
            logits, log_variance, _ = model.roi_heads.mask_head.layers(torch.rand(3, 64, 14, 14, requires_grad=True))
            log_variance.sum().backward()
        self.assertIsNone(model.roi_heads.mask_head.mask_fcn1.weight.grad)

    def test_sigma_branch_frozen_after_the_configured_iteration(self):
        torch.manual_seed(0)
        model = build_model(student_cfg(self.embeddings, **{"MODEL.XPM.STUDENT.SIGMA_FREEZE_ITER": 2}))
        model.train()
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05, momentum=0.9, weight_decay=1e-4)
        drop_frozen = DropFrozenGradients(model)  # what XPMTrainer runs after backward
        sigma_weights, other = [], []
        with EventStorage() as storage:
            for iteration in range(4):
                storage.iter = iteration
                optimizer.zero_grad(set_to_none=True)  # detectron2's SimpleTrainer does the same
                sum(model(self.batch()).values()).backward()
                sigma_grads = [p.grad for p in model.roi_heads.mask_head.sigma.parameters()]
                # frozen or not, the branch is in the graph (DDP needs that); frozen, its gradient is zero
                self.assertTrue(all(g is not None for g in sigma_grads))
                self.assertEqual(all(torch.count_nonzero(g) == 0 for g in sigma_grads), iteration >= 2)
                drop_frozen.after_backward()
                optimizer.step()
                sigma_weights.append(copy.deepcopy(model.roi_heads.mask_head.sigma[3].weight.detach()))
                other.append(copy.deepcopy(model.roi_heads.mask_head.predictor.weight.detach()))
        self.assertFalse(torch.equal(sigma_weights[0], sigma_weights[1]))  # trains before iteration 2
        self.assertTrue(torch.equal(sigma_weights[1], sigma_weights[2]))  # then stops, momentum too
        self.assertTrue(torch.equal(sigma_weights[2], sigma_weights[3]))
        self.assertFalse(torch.equal(other[2], other[3]))  # the rest keeps training

    def test_pseudo_proposal_weights(self):
        model = build_model(student_cfg(self.embeddings, **{"MODEL.XPM.STUDENT.WEIGHTING": "object", "MODEL.XPM.STUDENT.WEIGHT_SCALE": 0.5,
                                                            "MODEL.XPM.STUDENT.PSEUDO_LOSS_WEIGHT": 1.0}))
        heads = model.roi_heads
        # image 0: proposals on GT object 0, pseudo object 1 (twice: sigma 1 and 3), background
        # image 1: pseudo object 0 (sigma 4)
        p0 = Instances((10, 10), gt_classes=torch.tensor([2, 6, 6, 8]), gt_pseudo=torch.tensor([False, True, True, True]),
                       gt_object=torch.tensor([0, 1, 1, 1]), mask_sigma=torch.tensor([0.5, 1.0, 3.0, float("nan")]))
        p1 = Instances((10, 10), gt_classes=torch.tensor([5]), gt_pseudo=torch.tensor([True]),
                       gt_object=torch.tensor([0]), mask_sigma=torch.tensor([4.0]))
        with EventStorage():
            self.assertTrue(torch.allclose(heads.proposal_weights([p0, p1]), torch.tensor([1, 0.25, 0.25, 1, 0.125])))
            heads.weighting, heads.weight_scale = "batch", 0.01  # mean sigma of the pseudo proposals: (1 + 3 + 4) / 3
            self.assertTrue(torch.allclose(heads.proposal_weights([p0, p1]), torch.tensor([1, 0.00375, 0.00375, 1, 0.00375])))
            heads.weighting, heads.pseudo_weight = "none", 0.3
            self.assertTrue(torch.allclose(heads.proposal_weights([p0, p1]), torch.tensor([1, 0.3, 0.3, 1, 0.3])))

    def test_weights_from_the_students_own_view(self):
        model = build_model(student_cfg(self.embeddings, **{"MODEL.XPM.STUDENT.WEIGHT_WARMUP_ITERS": 100, "MODEL.XPM.STUDENT.PSEUDO_LOSS_WEIGHT": 1.0}))
        heads = model.roi_heads
        # pseudo object 1 of image 0 on two proposals (agreement 0.2 and 0.6), pseudo object 0 of image 1 (0.9)
        p0 = Instances((10, 10), gt_classes=torch.tensor([2, 6, 6, 8]), gt_pseudo=torch.tensor([False, True, True, True]),
                       gt_object=torch.tensor([0, 1, 1, 1]), mask_agreement=torch.tensor([1.0, 0.2, 0.6, float("nan")]))
        p1 = Instances((10, 10), gt_classes=torch.tensor([5]), gt_pseudo=torch.tensor([True]),
                       gt_object=torch.tensor([0]), mask_agreement=torch.tensor([0.9]))
        # class logits: the pseudo class gets probability 0.5, 0.25 and 0.8 on the three pseudo proposals
        scores = torch.full((5, 9), -30.0)
        for row, column, probability in ((1, 6, 0.5), (2, 6, 0.25), (4, 5, 0.8)):
            scores[row, column] = np.log(probability)
            scores[row, 8] = np.log(1 - probability)
        scores[0, 2] = scores[3, 8] = 0.0
        expected = {"agreement": [0.4, 0.4, 0.9], "class_probability": [0.375, 0.375, 0.8],
                    # the product per proposal, then the object's mean: (0.2 * 0.5 + 0.6 * 0.25) / 2
                    "agreement_probability": [0.125, 0.125, 0.72]}
        with EventStorage() as storage:
            for weighting, signal in expected.items():
                heads.weighting = weighting
                for iteration, blend in ((0, 0.0), (25, 0.25), (100, 1.0), (500, 1.0)):  # blended in from 1 over 100 iterations
                    storage.iter = iteration
                    pseudo = [1 - blend + blend * v for v in signal]
                    self.assertTrue(torch.allclose(heads.proposal_weights([p0, p1], scores), torch.tensor([1, pseudo[0], pseudo[1], 1, pseudo[2]])),
                                    (weighting, iteration))

    def test_weights_relative_to_each_class_running_mean(self):
        model = build_model(student_cfg(self.embeddings, **{"MODEL.XPM.STUDENT.WEIGHTING": "class_probability_relative",
                                                            "MODEL.XPM.STUDENT.WEIGHT_WARMUP_ITERS": 0, "MODEL.XPM.STUDENT.CLASS_MEAN_MOMENTUM": 0.5}))
        heads = model.roi_heads
        self.assertEqual(heads.pseudo_weight, 2.0)  # the default PSEUDO_LOSS_WEIGHT scales every relative weight

        def scores_for(rows):  # (row, class, probability of that class; the rest on background)
            scores = torch.full((len(rows), 9), -30.0)
            for row, column, probability in rows:
                scores[row, column] = np.log(probability)
                if column != 8:
                    scores[row, 8] = np.log(1 - probability)
            return scores

        # batch 1: class 6 has two pseudo objects, one on two proposals (0.5 and 0.25: 0.375), one
        # at 0.125, so its mean is 0.25; class 5 has one at 0.8
        p0 = Instances((10, 10), gt_classes=torch.tensor([2, 6, 6, 8]), gt_pseudo=torch.tensor([False, True, True, True]),
                       gt_object=torch.tensor([0, 1, 1, 1]))
        p1 = Instances((10, 10), gt_classes=torch.tensor([6, 5]), gt_pseudo=torch.tensor([True, True]), gt_object=torch.tensor([0, 1]))
        scores = scores_for([(0, 2, 0.9), (1, 6, 0.5), (2, 6, 0.25), (3, 8, 1.0), (4, 6, 0.125), (5, 5, 0.8)])
        with EventStorage():
            self.assertTrue(torch.allclose(heads.proposal_weights([p0, p1], scores), torch.tensor([1, 3.0, 3.0, 1, 1.0, 2.0])))
            means = heads.class_signal_means
            self.assertAlmostEqual(means[6].item(), 0.25, places=5)
            self.assertAlmostEqual(means[5].item(), 0.8, places=5)
            self.assertEqual(int(torch.isfinite(means).sum()), 2)  # the other classes not seen yet
            # batch 2: class 6 at 0.75 moves its mean half way (momentum 0.5) to 0.5: 1.5, capped at 1.2
            heads.relative_weight_max = 1.2
            weights = heads.proposal_weights([p1], scores_for([(0, 6, 0.75), (1, 5, 0.8)]))
            self.assertTrue(torch.allclose(weights, torch.tensor([2.4, 2.0])))
            self.assertAlmostEqual(heads.class_signal_means[6].item(), 0.5, places=5)
            # a batch without pseudo objects leaves the means alone
            before = heads.class_signal_means.clone()
            heads.proposal_weights([Instances((10, 10), gt_classes=torch.tensor([2]), gt_pseudo=torch.tensor([False]))], scores_for([(0, 2, 0.9)]))
            self.assertTrue(torch.equal(torch.isfinite(before), torch.isfinite(heads.class_signal_means)))
            self.assertTrue(torch.equal(before[torch.isfinite(before)], heads.class_signal_means[torch.isfinite(before)]))

    def test_bad_relative_weight_settings_name_their_key(self):
        for key, value, message in (("MODEL.XPM.STUDENT.CLASS_MEAN_MOMENTUM", 1.0, r"CLASS_MEAN_MOMENTUM must be in \[0, 1\), got 1.0"),
                                    ("MODEL.XPM.STUDENT.RELATIVE_WEIGHT_MAX", 0.5, "RELATIVE_WEIGHT_MAX must be >= 1, got 0.5")):
            with self.assertRaisesRegex(ValueError, message):
                build_model(student_cfg(self.embeddings, **{key: value}))

    def test_a_training_step_with_each_new_weighting(self):
        for weighting in ("agreement", "class_probability", "agreement_probability", "class_probability_relative",
                          "agreement_probability_relative"):
            torch.manual_seed(0)
            model = build_model(student_cfg(self.embeddings, **{"MODEL.XPM.STUDENT.WEIGHTING": weighting, "MODEL.XPM.STUDENT.WEIGHT_WARMUP_ITERS": 0}))
            model.train()
            with EventStorage() as storage:
                losses = model(self.batch())
                self.assertTrue(all(torch.isfinite(v) for v in losses.values()), weighting)
                sum(losses.values()).backward()
                weight = storage.latest()["noise_aware/pseudo_box_weight"][0]
            # PSEUDO_LOSS_WEIGHT (2) x a mean of IoUs / probabilities; relative ones capped at RELATIVE_WEIGHT_MAX (2)
            self.assertTrue(0 <= weight <= 2 * (2 if weighting.endswith("_relative") else 1), (weighting, weight))
            self.assertGreater(model.roi_heads.box_predictor.projection.weight.grad.abs().sum().item(), 0)

    def test_weighted_mask_loss_by_hand(self):
        # image 0: GT object (loss 0.4), pseudo object on two proposals (1.0, 2.0), background;
        # image 1: pseudo object (3.0); weights 1, 0.5, 0.5, 1, 0.25
        model = build_model(student_cfg(self.embeddings, **{"MODEL.XPM.STUDENT.WEIGHT_MASK_LOSS": True}))
        heads = model.roi_heads
        own = torch.tensor([0.4, 1.0, 2.0, float("nan"), 3.0], requires_grad=True)
        p0 = Instances((10, 10), gt_classes=torch.tensor([2, 6, 6, 8]), gt_pseudo=torch.tensor([False, True, True, True]), mask_instance_loss=own[:4])
        p1 = Instances((10, 10), gt_classes=torch.tensor([5]), gt_pseudo=torch.tensor([True]), mask_instance_loss=own[4:])
        weights = torch.tensor([1, 0.5, 0.5, 1, 0.25])
        unweighted = torch.tensor(7.0, requires_grad=True)
        loss = heads._weighted_mask_loss(unweighted, [p0, p1], weights)
        self.assertAlmostEqual(loss.item(), (0.4 + 0.5 + 1.0 + 0.75) / 4, places=6)  # MASK_LOSS_MEANS "all"
        loss.backward()
        self.assertTrue(torch.allclose(own.grad, torch.tensor([0.25, 0.125, 0.125, 0, 0.0625])))
        self.assertEqual(unweighted.grad.item(), 0)  # kept in the graph, with weight 0
        heads.mask_head.mask_loss_means = "per_source"  # pseudo mean + GT mean
        self.assertAlmostEqual(heads._weighted_mask_loss(unweighted, [p0, p1], weights).item(), (0.5 + 1.0 + 0.75) / 3 + 0.4, places=6)

    def test_a_training_step_with_the_weighted_mask_loss(self):
        losses = {}
        for weight_mask_loss, pseudo_weight in ((False, 1.0), (True, 1.0), (True, 0.0)):
            torch.manual_seed(0)
            model = build_model(student_cfg(self.embeddings, **{"MODEL.XPM.STUDENT.WEIGHTING": "none", "MODEL.XPM.STUDENT.PSEUDO_LOSS_WEIGHT": pseudo_weight,
                                                                "MODEL.XPM.STUDENT.WEIGHT_MASK_LOSS": weight_mask_loss}))
            model.train()
            torch.manual_seed(1)  # the same images, sampled proposals and noise each time
            with EventStorage():
                step = model(self.batch())
                sum(step.values()).backward()
            losses[(weight_mask_loss, pseudo_weight)] = step["loss_mask"].item()
            # the sigma branch stays in the graph (DDP) even where pseudo objects weigh 0
            self.assertTrue(all(p.grad is not None for p in model.roi_heads.mask_head.sigma.parameters()))
        self.assertAlmostEqual(losses[(True, 1.0)], losses[(False, 1.0)], places=5)  # weight 1: the plain loss
        self.assertLess(losses[(True, 0.0)], losses[(False, 1.0)])  # GT-only terms, over all instances

    def test_weighted_mask_loss_needs_the_noise_aware_head(self):
        with self.assertRaisesRegex(ValueError, "WEIGHT_MASK_LOSS needs MODEL.ROI_MASK_HEAD.NAME 'NoiseAwareMaskHead'"):
            build_model(student_cfg(self.embeddings, **{"MODEL.XPM.STUDENT.WEIGHT_MASK_LOSS": True, "MODEL.ROI_MASK_HEAD.NAME": "MaskRCNNConvUpsampleHead"}))

    def test_plain_bce_ablation_and_frozen_backbone(self):
        model = build_model(student_cfg(self.embeddings, **{"MODEL.XPM.STUDENT.NOISE_AWARE": False,
                                                            "MODEL.XPM.STUDENT.FREEZE_BACKBONE": True, "MODEL.XPM.STUDENT.FREEZE_RPN": True}))
        model.train()
        self.assertFalse(model.backbone.training)
        with EventStorage():
            sum(model(self.batch()).values()).backward()
        self.assertFalse(model.roi_heads.mask_head.sigma[3].weight.requires_grad)  # never trained without the noise-aware loss
        self.assertTrue(all(p.grad is None for p in model.backbone.parameters()))
        self.assertTrue(all(p.grad is None for p in model.proposal_generator.parameters()))


@requires_detectron2
class TestPseudoLabelIndexAtStartUp(unittest.TestCase):
    """What the student does with its pseudo-label file before training (one process here; the
    multi-process test runs the same with two)."""

    def setUp(self):
        import pycocotools.mask as mask_util

        self.tmp = tempfile.TemporaryDirectory()
        self.root = os.path.join(self.tmp.name, "images")
        os.makedirs(self.root)
        open(os.path.join(self.root, "a.png"), "wb").close()
        mask = np.zeros((6, 8), np.uint8, order="F")
        mask[1:3, 2:5] = 1
        self.good = {
            "images": [{"id": 1, "file_name": "a.png", "height": 6, "width": 8}],
            "categories": [{"id": 6, "name": "star"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 6, "bbox": [2, 1, 3, 2], "area": 6, "iscrowd": 0, "score": 0.9, "word": "star",
                             "segmentation": {"size": [6, 8], "counts": mask_util.encode(mask)["counts"].decode()}}],
        }
        self.path = os.path.join(self.tmp.name, "labels", "pl.json")
        os.makedirs(os.path.dirname(self.path))
        self.write(self.good)

    def tearDown(self):
        self.tmp.cleanup()

    def write(self, data):
        with open(self.path, "w") as f:
            json.dump(data, f)

    def test_indexed_once_then_reused_and_rebuilt_when_the_file_changes(self):
        from xpseudo.data.pseudo_dataset import open_pseudo_label_index
        from xpseudo.pseudo.label_index import index_path

        index = open_pseudo_label_index(self.path, self.root)
        self.assertEqual(index.path, index_path(self.path))
        self.assertEqual((index.images_checked_under, len(index)), (self.root, 1))
        built = os.stat(index.path).st_mtime_ns
        self.assertEqual(os.stat(open_pseudo_label_index(self.path, self.root).path).st_mtime_ns, built)
        bad = copy.deepcopy(self.good)
        bad["annotations"][0]["category_id"] = 99
        self.write(bad)
        previous = open(index.path, "rb").read()
        with self.assertRaisesRegex(InputError, r"pl.json: annotations\[0\] \(id 1\): category_id 99 is not among the categories"):
            open_pseudo_label_index(self.path, self.root)
        self.assertEqual(open(index.path, "rb").read(), previous)  # the old index is not lost
        bad = copy.deepcopy(self.good)
        bad["images"][0]["file_name"] = "missing.png"
        self.write(bad)
        with self.assertRaisesRegex(InputError, r"images\[0\] \(id 1\): image file .*missing.png does not exist"):
            open_pseudo_label_index(self.path, self.root)

    def test_images_checked_again_under_another_folder_and_read_only_folders(self):
        from unittest import mock

        import xpseudo.data.pseudo_dataset as pseudo_dataset

        self.assertEqual(pseudo_dataset.open_pseudo_label_index(self.path, self.root).images_checked_under, self.root)
        elsewhere = os.path.join(self.tmp.name, "copy")
        os.makedirs(elsewhere)
        with self.assertRaisesRegex(InputError, r"image file .*copy/a.png does not exist"):
            pseudo_dataset.open_pseudo_label_index(self.path, elsewhere)
        os.remove(pseudo_dataset.index_path(self.path))
        fallback = os.path.join(self.tmp.name, "output")
        with mock.patch.object(pseudo_dataset.os, "access", return_value=False):  # root may write anywhere: pretend
            index = pseudo_dataset.open_pseudo_label_index(self.path, self.root, fallback)
        self.assertEqual(index.path, os.path.join(fallback, "pl.index"))
        self.assertFalse(os.path.exists(pseudo_dataset.index_path(self.path)))


if __name__ == "__main__":
    unittest.main()
