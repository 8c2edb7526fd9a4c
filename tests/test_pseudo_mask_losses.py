import math
import unittest

import torch
import torch.nn.functional as F

from xpseudo.losses import (
    bce_mask_loss,
    confidence_guided_mask_loss,
    response_scaling_mask_loss,
    response_scaling_uncertainty,
    uncertain_band,
)


def softplus(x):
    return math.log1p(math.exp(x))


class TestBCEMaskLoss(unittest.TestCase):
    def test_per_instance_mean_by_hand(self):
        logits = torch.tensor([[[2.0, -1.0]], [[0.0, 3.0]]])
        targets = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
        loss = bce_mask_loss(logits, targets)
        # BCE(z, 1) = softplus(-z), BCE(z, 0) = softplus(z)
        self.assertAlmostEqual(loss[0].item(), (softplus(-2.0) + softplus(-1.0)) / 2, places=6)
        self.assertAlmostEqual(loss[1].item(), (softplus(0.0) + softplus(-3.0)) / 2, places=6)


class TestConfidenceGuided(unittest.TestCase):
    def test_band_is_inclusive_and_checked(self):
        p = torch.tensor([0.0, 0.29, 0.3, 0.5, 0.7, 0.71, 1.0])
        self.assertEqual(uncertain_band(p, 0.3, 0.7).tolist(), [False, False, True, True, True, False, False])
        with self.assertRaises(ValueError):
            uncertain_band(p, 0.7, 0.3)

    def test_ignores_exactly_the_uncertain_pixels(self):
        logits = torch.tensor([[[4.0, -2.0, 0.5, 1.0]]], requires_grad=True)
        targets = torch.tensor([[[1.0, 0.0, 1.0, 0.0]]])
        teacher = torch.tensor([[[0.95, 0.1, 0.55, 0.4]]])  # the last two in the band [0.3, 0.7]
        ignore = uncertain_band(teacher, 0.3, 0.7)
        loss = confidence_guided_mask_loss(logits, targets, ignore)
        self.assertAlmostEqual(loss.item(), (softplus(-4.0) + softplus(-2.0)) / 2, places=6)
        loss.sum().backward()
        self.assertEqual((logits.grad[0, 0] != 0).tolist(), [True, True, False, False])
        # changing an ignored pixel's logit or target changes nothing
        other = confidence_guided_mask_loss(torch.tensor([[[4.0, -2.0, -9.0, 9.0]]]), torch.tensor([[[1.0, 0.0, 0.0, 1.0]]]), ignore)
        self.assertAlmostEqual(other.item(), loss.item(), places=6)

    def test_all_uncertain_instance_is_zero_and_no_band_is_bce(self):
        logits, targets = torch.randn(2, 3, 3, generator=torch.Generator().manual_seed(0)), torch.ones(2, 3, 3)
        everything = torch.ones(2, 3, 3, dtype=torch.bool)
        everything[1] = False
        loss = confidence_guided_mask_loss(logits, targets, everything)
        self.assertEqual(loss[0].item(), 0.0)
        self.assertTrue(torch.allclose(loss[1], bce_mask_loss(logits, targets)[1]))


class TestResponseScaling(unittest.TestCase):
    def test_uncertainty_by_hand(self):
        logits = torch.tensor([0.0, 2.0, -30.0, 30.0])
        u = response_scaling_uncertainty(logits, (0.5, 1.0, 2.0))
        sigmoid = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
        self.assertAlmostEqual(u[0].item(), sigmoid(math.log(2)) - sigmoid(-math.log(2)), places=6)  # 2/3 - 1/3
        self.assertAlmostEqual(u[0].item(), 1 / 3, places=6)
        self.assertAlmostEqual(u[1].item(), sigmoid(2 + math.log(2)) - sigmoid(2 - math.log(2)), places=6)
        self.assertLess(u[2].item(), 1e-9)  # a sure pixel answers every scale alike
        self.assertLess(u[3].item(), 1e-9)
        self.assertGreater(u[0].item(), u[1].item())  # most uncertain at the decision boundary

    def test_loss_weights_bce_by_one_minus_uncertainty_and_not_through_it(self):
        logits = torch.tensor([[[0.0, 3.0]]], requires_grad=True)
        targets = torch.tensor([[[1.0, 0.0]]])
        loss = response_scaling_mask_loss(logits, targets, (0.25, 4.0))
        u = response_scaling_uncertainty(logits, (0.25, 4.0))[0, 0]
        expected = ((1 - u[0]) * softplus(0.0) + (1 - u[1]) * softplus(3.0)) / 2
        self.assertAlmostEqual(loss.item(), expected.item(), places=6)
        loss.sum().backward()
        # the weight is detached: the gradient is the weighted BCE gradient (sigmoid(z) - y) w / 2
        grad = ((torch.sigmoid(logits.detach()) - targets) * (1 - u) / 2)
        self.assertTrue(torch.allclose(logits.grad, grad, atol=1e-6))

    def test_scales_are_checked(self):
        with self.assertRaises(ValueError):
            response_scaling_uncertainty(torch.zeros(2), (1.0,))
        with self.assertRaises(ValueError):
            response_scaling_uncertainty(torch.zeros(2), (0.0, 2.0))

    def test_single_scale_pair_matches_a_band_like_weight(self):
        # equal weights on symmetric logits: the weight depends on |mu| only
        logits = torch.tensor([[[-1.5, 1.5]]])
        loss = response_scaling_mask_loss(logits, torch.tensor([[[0.0, 1.0]]]))
        self.assertAlmostEqual(loss.item(), (1 - response_scaling_uncertainty(logits[0, 0, :1], (0.25, 4.0))).item() * F.softplus(torch.tensor(-1.5)).item(), places=6)


if __name__ == "__main__":
    unittest.main()
