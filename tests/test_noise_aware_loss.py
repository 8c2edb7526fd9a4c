import math
import unittest

import torch
import torch.nn.functional as F

from xpseudo.losses import noise_aware_mask_loss, pseudo_loss_weights, sigma_from_log_variance


class TestNoiseAwareMaskLoss(unittest.TestCase):
    def test_zero_noise_is_plain_bce_per_instance(self):
        logits = torch.tensor([[[2.0, -1.0], [0.0, 3.0]], [[-2.0, -2.0], [1.0, 0.5]]])
        targets = torch.tensor([[[1.0, 0.0], [1.0, 1.0]], [[0.0, 1.0], [1.0, 0.0]]])
        loss = noise_aware_mask_loss(logits, torch.zeros_like(logits), targets, noise=torch.zeros(3, *logits.shape))
        expected = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean((1, 2))
        self.assertTrue(torch.allclose(loss, expected))
        # one value by hand: instance 0 = mean of softplus(-2), softplus(-1), softplus(0), softplus(-3)
        by_hand = sum(math.log1p(math.exp(-v)) for v in (2.0, 1.0, 0.0, 3.0)) / 4
        self.assertAlmostEqual(loss[0].item(), by_hand, places=6)

    def test_likelihood_averaged_over_samples_of_mu_plus_sigma_eps(self):
        logits = torch.zeros(1, 1, 1)
        log_variance = torch.full((1, 1, 1), math.log(4.0))  # sigma = 2
        one = noise_aware_mask_loss(logits, log_variance, torch.ones(1, 1, 1), noise=torch.full((1, 1, 1, 1), 1.5))
        self.assertAlmostEqual(one.item(), math.log1p(math.exp(-3.0)), places=6)  # one sample: BCE at logit 3
        two = noise_aware_mask_loss(logits, log_variance, torch.ones(1, 1, 1), noise=torch.tensor([1.5, -0.5]).view(2, 1, 1, 1))
        sigmoid = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
        self.assertAlmostEqual(two.item(), -math.log((sigmoid(3.0) + sigmoid(-1.0)) / 2), places=6)

    def test_gradients_reach_logits_and_log_variance(self):
        logits = torch.zeros(2, 4, 4, requires_grad=True)
        log_variance = torch.zeros(2, 4, 4, requires_grad=True)
        noise = torch.randn(4, 2, 4, 4, generator=torch.Generator().manual_seed(0))
        noise_aware_mask_loss(logits, log_variance, torch.ones(2, 4, 4), noise=noise).sum().backward()
        self.assertGreater(logits.grad.abs().sum().item(), 0)
        self.assertGreater(log_variance.grad.abs().sum().item(), 0)

    def test_large_sigma_lowers_the_expected_loss_on_a_wrong_target(self):
        # a confident logit against a wrong pseudo mask: with several samples, raising sigma softens
        # the penalty (some samples agree with the target); with one sample it cannot on average
        noise = torch.randn(8, 1, 64, 64, generator=torch.Generator().manual_seed(0))
        logits, wrong = torch.full((1, 64, 64), 6.0), torch.zeros(1, 64, 64)
        sure = noise_aware_mask_loss(logits, torch.full_like(logits, math.log(0.01)), wrong, noise=noise)
        unsure = noise_aware_mask_loss(logits, torch.full_like(logits, math.log(25.0)), wrong, noise=noise)
        self.assertLess(unsure.item(), sure.item() - 2)
        single = [noise_aware_mask_loss(logits, torch.full_like(logits, math.log(v)), wrong, noise=noise[:1]) for v in (0.01, 25.0)]
        self.assertGreater(single[1].item(), single[0].item())


class TestPseudoLossWeights(unittest.TestCase):
    # four instances: two proposals on object 7 (mean sigma 1 and 3), one on object 2 (2), one on 9 (4)
    sigma = torch.tensor([1.0, 2.0, 3.0, 4.0])
    objects = torch.tensor([7, 2, 7, 9])

    def test_per_object_averages_the_instances_of_an_object(self):
        weights = pseudo_loss_weights(self.sigma, self.objects, "object", scale=0.5)
        self.assertTrue(torch.allclose(weights, torch.tensor([0.5 / 2, 0.5 / 2, 0.5 / 2, 0.5 / 4])))
        alone = pseudo_loss_weights(self.sigma, None, "object", scale=1.0)
        self.assertTrue(torch.allclose(alone, 1 / self.sigma))

    def test_batch_scalar(self):
        weights = pseudo_loss_weights(self.sigma, self.objects, "batch", scale=0.01)
        self.assertTrue(torch.allclose(weights, torch.full((4,), 0.01 / 2.5)))

    def test_mean_sigma_of_a_log_variance_map(self):
        log_variance = torch.log(torch.tensor([[4.0, 4.0], [16.0, 16.0]]))  # sigma 2 and 4
        self.assertEqual(sigma_from_log_variance(log_variance).mean().item(), 3.0)

    def test_detached_empty_and_bad_mode(self):
        sigma = self.sigma.clone().requires_grad_(True)
        self.assertFalse(pseudo_loss_weights(sigma, self.objects).requires_grad)
        self.assertEqual(pseudo_loss_weights(torch.zeros(0), None, "batch").shape, (0,))
        with self.assertRaisesRegex(ValueError, "must be one of"):
            pseudo_loss_weights(self.sigma, None, "pixel")


if __name__ == "__main__":
    unittest.main()
