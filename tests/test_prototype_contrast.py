import math
import unittest

import torch
import torch.nn.functional as F

from xpseudo.losses import PrototypeBank, prototype_contrast_loss, sample_anchor_pixels


class TestPrototypeBank(unittest.TestCase):
    def test_first_update_is_the_normalised_mean_then_momentum(self):
        bank = PrototypeBank(3, 2, momentum=0.5)
        features = torch.tensor([[2.0, 0.0], [0.0, 3.0], [0.0, 1.0]])
        bank.update(features, torch.tensor([0, 2, 2]))
        self.assertEqual(bank.initialized.tolist(), [True, False, True])
        self.assertTrue(torch.allclose(bank.prototypes[0], torch.tensor([1.0, 0.0])))
        self.assertTrue(torch.allclose(bank.prototypes[2], torch.tensor([0.0, 1.0])))
        self.assertTrue(torch.equal(bank.prototypes[1], torch.zeros(2)))
        bank.update(torch.tensor([[0.0, 5.0]]), torch.tensor([0]))
        # normalise(0.5 * [1, 0] + 0.5 * [0, 1]) = [1, 1] / sqrt(2); label 2 not seen: unchanged
        self.assertTrue(torch.allclose(bank.prototypes[0], torch.tensor([1.0, 1.0]) / math.sqrt(2)))
        self.assertTrue(torch.allclose(bank.prototypes[2], torch.tensor([0.0, 1.0])))

    def test_prototypes_are_buffers_in_the_state_dict(self):
        bank = PrototypeBank(2, 4)
        self.assertEqual(set(bank.state_dict()), {"prototypes", "initialized"})
        self.assertEqual(list(bank.parameters()), [])

    def test_momentum_is_checked(self):
        with self.assertRaises(ValueError):
            PrototypeBank(2, 2, momentum=1.0)


class TestPrototypeContrastLoss(unittest.TestCase):
    def test_against_a_hand_softmax_over_usable_prototypes(self):
        prototypes = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
        usable = torch.tensor([True, True, False])
        features = torch.tensor([[3.0, 4.0]])  # normalised: [0.6, 0.8]
        loss = prototype_contrast_loss(features, torch.tensor([1]), prototypes, usable, temperature=0.5)
        a, b = 0.6 / 0.5, 0.8 / 0.5  # the unusable third prototype takes no part
        self.assertAlmostEqual(loss.item(), -(b - math.log(math.exp(a) + math.exp(b))), places=5)

    def test_no_anchor_gives_zero_in_the_graph(self):
        features = torch.randn(0, 4, requires_grad=True)
        loss = prototype_contrast_loss(features, torch.zeros(0, dtype=torch.long), torch.eye(4)[:2], torch.ones(2, dtype=torch.bool))
        self.assertEqual(loss.item(), 0.0)
        self.assertTrue(loss.requires_grad)

    def test_gradient_pulls_a_pixel_towards_its_prototype(self):
        prototypes = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        features = torch.tensor([[1.0, 1.0]], requires_grad=True)
        prototype_contrast_loss(features, torch.tensor([0]), prototypes, torch.ones(2, dtype=torch.bool)).backward()
        moved = F.normalize(features.detach() - 0.1 * features.grad, dim=1)
        self.assertGreater(moved[0, 0].item(), moved[0, 1].item())


class TestAnchorSampling(unittest.TestCase):
    def test_hardest_first_then_random_and_unusable_labels_skipped(self):
        prototypes = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
        # label 0: similarities to [1, 0] of 1.0, 0.8, 0.0 (index 2 the hardest), -0.6 (index 3 harder)
        features = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-0.6, 0.8], [0.0, 1.0], [1.0, 0.0]])
        labels = torch.tensor([0, 0, 0, 0, 1, 2])
        usable = torch.tensor([True, True, False])
        picked = sample_anchor_pixels(features, labels, prototypes, usable, per_label=3, hard_fraction=0.5, generator=torch.Generator().manual_seed(0))
        picked = picked.tolist()
        self.assertEqual(picked[:2], [3, 2])  # ceil(0.5 * 3) = 2 hardest of label 0, hardest first
        self.assertIn(picked[2], [0, 1])  # one more at random among the rest of label 0
        self.assertEqual(picked[3:], [4])  # label 1 has one pixel; label 2 is not usable
        all_hard = sample_anchor_pixels(features, labels, prototypes, usable, per_label=10, hard_fraction=1.0)
        self.assertEqual(sorted(all_hard.tolist()), [0, 1, 2, 3, 4])


if __name__ == "__main__":
    unittest.main()
