"""The switches that reproduce the authors' release (configs/coco_paper, docs/DESIGN.md), checked
against hand computations written from their formulas: the sigma branch, the two-means mask loss,
the stage-1 gradient clip and the per-process grounding contrast. (The classification loss's RoI
normaliser is in test_background_weight.py, the unnormalised pick in test_generate_pseudo_labels.py.)"""
import math
import os
import unittest

from tests.helpers import HAS_DETECTRON2, REPO, requires_detectron2

if HAS_DETECTRON2:
    import torch
    import torch.nn.functional as F
    from detectron2.layers import ShapeSpec
    from detectron2.structures import BitMasks, Boxes, Instances
    from detectron2.utils.events import EventStorage

    from xpseudo.modeling.noise_aware_mask_head import NoiseAwareMaskHead


def mask_head(**kwargs):
    return NoiseAwareMaskHead(ShapeSpec(channels=256, width=14, height=14), num_classes=1, conv_dims=[256] * 5, **kwargs)


@requires_detectron2
class TestSigmaBranch(unittest.TestCase):
    def test_the_authors_branch_is_one_1x1_conv_starting_at_their_sigma(self):
        torch.manual_seed(0)
        head = mask_head(sigma_branch="linear", sigma_init=1.0).eval()
        self.assertEqual(sum(p.numel() for p in head.sigma.parameters()), 256 + 1)
        self.assertEqual(sum(p.numel() for p in mask_head().sigma.parameters()), 852737)  # 3x3 conv + deconv + 1x1
        self.assertAlmostEqual(float(head.sigma.weight.std()), 0.001, delta=0.0002)
        with torch.no_grad():
            logits, log_variance, pixels = head.layers(torch.randn(4, 256, 14, 14))
        self.assertEqual(tuple(log_variance.shape), (4, 1, 28, 28))
        sigma = torch.exp(0.5 * log_variance)
        self.assertAlmostEqual(float(sigma.mean()), math.exp(0.5), delta=0.01)  # 1.65, the bias 1.0 as a log-variance
        # it reads the mask features after the deconvolution (detached), one weight per channel
        expected = F.conv2d(pixels, head.sigma.weight, head.sigma.bias)
        self.assertTrue(torch.allclose(log_variance, expected, atol=1e-6))

    def test_it_trains_only_itself(self):
        head = mask_head(sigma_branch="linear", sigma_init=1.0).train()
        with EventStorage():
            logits, log_variance, _ = head.layers(torch.randn(2, 256, 14, 14))
        log_variance.sum().backward()
        self.assertGreater(float(head.sigma.weight.grad.abs().sum()), 0)
        self.assertIsNone(head.deconv.weight.grad)  # the features are detached

    def test_unknown_branch_is_refused(self):
        with self.assertRaisesRegex(ValueError, "SIGMA_BRANCH"):
            mask_head(sigma_branch="deep")


@requires_detectron2
class TestTwoMeansMaskLoss(unittest.TestCase):
    def instances(self):
        """One image: 3 ground-truth and 1 pseudo instance, boxes covering the image."""
        masks = torch.zeros(4, 28, 28, dtype=torch.bool)
        masks[0, :14], masks[1, :, :7], masks[2, 5:20, 5:20], masks[3, 10:] = True, True, True, True
        image = Instances((28, 28), proposal_boxes=Boxes(torch.tensor([[0.0, 0.0, 28.0, 28.0]] * 4)), gt_masks=BitMasks(masks),
                          gt_pseudo=torch.tensor([False, False, False, True]), gt_classes=torch.tensor([0, 1, 2, 3]))
        return [image], masks.float()

    def test_the_authors_loss_is_the_sum_of_the_two_means(self):
        torch.manual_seed(0)
        logits, log_variance = torch.randn(4, 28, 28), torch.zeros(4, 28, 28)
        instances, targets = self.instances()
        per_instance = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").flatten(1).mean(1)
        losses = {}
        for means in ("all", "per_source"):
            head = mask_head(mask_loss="bce", mask_loss_means=means)
            with EventStorage():
                losses[means] = head.loss(logits, log_variance, instances)
        self.assertAlmostEqual(float(losses["all"]), float(per_instance.mean()), places=6)
        self.assertAlmostEqual(float(losses["per_source"]), float(per_instance[:3].mean() + per_instance[3]), places=6)
        # ground truth only: one mean, as before
        only_gt = [instances[0][:3]]
        with EventStorage():
            self.assertAlmostEqual(float(mask_head(mask_loss="bce", mask_loss_means="per_source").loss(logits[:3], log_variance[:3], only_gt)),
                                   float(per_instance[:3].mean()), places=6)
        with self.assertRaisesRegex(ValueError, "MASK_LOSS_MEANS"):
            mask_head(mask_loss_means="sum")


@requires_detectron2
class TestStageOneGradientClip(unittest.TestCase):
    def test_the_paper_grounding_config_caps_the_gradient_norm_at_5(self):
        from xpseudo.config import load_config
        from xpseudo.engine.trainer import XPMTrainer

        cfg = load_config(os.path.join(REPO, "configs/coco_paper/xpm_grounding_R50_FPN.yaml"))
        self.assertEqual((cfg.SOLVER.STEPS, cfg.MODEL.BACKBONE.FREEZE_AT), ((20000, 35000), 0))
        model = torch.nn.Linear(10, 3)
        optimizer = XPMTrainer.build_optimizer(cfg, model)
        for parameter in model.parameters():
            parameter.grad = torch.full_like(parameter, 100.0)  # norm 100 * sqrt(33)
        optimizer.step()
        norm = torch.sqrt(sum((p.grad**2).sum() for p in model.parameters()))
        self.assertAlmostEqual(float(norm), 5.0, places=4)
        # detectron2's own "norm" caps each tensor on its own: weight and bias at 5 each, sqrt(50) together
        per_tensor = cfg.clone()
        per_tensor.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "norm"
        clipped_apart = XPMTrainer.build_optimizer(per_tensor, model)
        for parameter in model.parameters():
            parameter.grad = torch.full_like(parameter, 100.0)
        clipped_apart.step()
        self.assertAlmostEqual(float(torch.sqrt(sum((p.grad**2).sum() for p in model.parameters()))), 50**0.5, places=4)
        # the authors' bias settings ride along: bias lr x2, no weight decay on biases
        bias_group = next(g for g in optimizer.param_groups if g["params"][0] is model.bias)
        self.assertEqual((bias_group["lr"], bias_group["weight_decay"]), (cfg.SOLVER.BASE_LR * 2, 0.0))


@requires_detectron2
class TestPaperFamilyConfigs(unittest.TestCase):
    def test_every_row_is_set(self):
        from xpseudo.config import load_config

        teacher = load_config(os.path.join(REPO, "configs/coco_paper/xpm_teacher_R50_FPN_1x.yaml"))
        student = load_config(os.path.join(REPO, "configs/coco_paper/xpm_student_R50_FPN_1x.yaml"))
        grounding = load_config(os.path.join(REPO, "configs/coco_paper/xpm_grounding_R50_FPN.yaml"))
        xpm = teacher.MODEL.XPM
        self.assertEqual((xpm.FREEZE_PROJECTION, xpm.GROUNDING.ENABLED), (True, False))  # row 1
        self.assertEqual((xpm.BACKGROUND_WEIGHT, xpm.CLS_LOSS_NORMALIZER), (0.2, "rois"))  # row 2
        self.assertFalse(grounding.MODEL.XPM.GROUNDING.CONTRAST_ACROSS_PROCESSES)  # row 3
        self.assertEqual((grounding.MODEL.XPM.GROUNDING.WORDS, grounding.MODEL.XPM.GROUNDING.MIN_WORD_COUNT), ("one_caption", 1))
        self.assertTrue(grounding.SOLVER.CLIP_GRADIENTS.ENABLED)  # row 5
        self.assertFalse(teacher.XPM.PSEUDO_LABELS.NORMALIZE_REGIONS)  # row 6
        self.assertEqual(student.MODEL.XPM.STUDENT.SIGMA_BRANCH, "linear")  # row 7
        for cfg in (teacher, student, grounding):  # row 8
            self.assertEqual((round(cfg.SOLVER.WARMUP_FACTOR, 4), cfg.SOLVER.WARMUP_ITERS, cfg.SOLVER.BIAS_LR_FACTOR, cfg.SOLVER.WEIGHT_DECAY_BIAS),
                             (0.3333, 500, 2.0, 0.0))
        self.assertAlmostEqual(teacher.MODEL.RPN.SMOOTH_L1_BETA, 1 / 9)  # row 9
        self.assertEqual(teacher.XPM.PSEUDO_LABELS.IMAGES, "annotated")  # row 11
        self.assertEqual(student.MODEL.XPM.STUDENT.MASK_LOSS_MEANS, "per_source")  # row 12
        self.assertFalse(student.MODEL.XPM.FREEZE_PROJECTION)  # their student trains the projection again
        noise = student.MODEL.XPM.STUDENT  # row 16: one noise sample, 0.01 / the batch's mean sigma, no extra factor
        self.assertEqual((noise.NUM_SAMPLES, noise.WEIGHTING, noise.WEIGHT_SCALE, noise.PSEUDO_LOSS_WEIGHT), (1, "batch", 0.01, 1.0))


if __name__ == "__main__":
    unittest.main()
