import math
import unittest

import torch
import torch.nn.functional as F

from xpseudo.losses.grounding import grounding_loss, image_caption_scores


def constructed_batch(seed=0, batch=4, regions=5, words=3, dim=16):
    """Each image has one region aligned with each of its caption's words, plus clutter."""
    g = torch.Generator().manual_seed(seed)
    word_emb = F.normalize(torch.randn(batch, words, dim, generator=g), dim=-1)
    clutter = torch.randn(batch, regions - words, dim, generator=g)
    region_emb = F.normalize(torch.cat([word_emb + 0.1 * torch.randn(batch, words, dim, generator=g), clutter], 1), dim=-1)
    return region_emb, torch.ones(batch, regions, dtype=torch.bool), word_emb, torch.ones(batch, words, dtype=torch.bool)


class TestGroundingLoss(unittest.TestCase):
    def test_matched_pairs_score_lower_loss_than_shuffled(self):
        regions, region_mask, words, word_mask = constructed_batch()
        matched = grounding_loss(regions, region_mask, words, word_mask, 0.1)
        order = torch.tensor([1, 2, 3, 0])
        shuffled = grounding_loss(regions, region_mask, words[order], word_mask[order], 0.1)
        self.assertLess(matched.item(), 0.05)
        self.assertGreater(shuffled.item(), 5.0)
        scores = image_caption_scores(regions, region_mask, words, word_mask, 0.1)
        self.assertEqual(scores.shape, (4, 4))
        self.assertTrue(torch.equal(scores.argmax(1), torch.arange(4)))

    def test_padding_is_ignored(self):
        regions, region_mask, words, word_mask = constructed_batch(batch=2)
        base = image_caption_scores(regions, region_mask, words, word_mask, 0.1)
        padded_regions = torch.cat([regions, torch.randn(2, 3, regions.shape[-1])], 1)
        padded_words = torch.cat([words, torch.randn(2, 2, words.shape[-1])], 1)
        region_mask = torch.cat([region_mask, torch.zeros(2, 3, dtype=torch.bool)], 1)
        word_mask = torch.cat([word_mask, torch.zeros(2, 2, dtype=torch.bool)], 1)
        torch.testing.assert_close(image_caption_scores(padded_regions, region_mask, padded_words, word_mask, 0.1), base)

    def test_hand_computed_single_pair_score_and_batch_of_one(self):
        regions = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
        words = torch.tensor([[[1.0, 0.0]]])
        ones = torch.ones(1, 2, dtype=torch.bool)
        # word side: softmax([1, 0] / T) . [1, 0]; region side: each region sees the only word.
        t = 0.5
        word_side = torch.softmax(torch.tensor([1.0, 0.0]) / t, 0)[0]
        region_side = (1.0 + 0.0) / 2
        score = image_caption_scores(regions, ones, words, ones[:, :1], t)
        torch.testing.assert_close(score, ((word_side + region_side) / 2).reshape(1, 1))
        self.assertEqual(grounding_loss(regions, ones, words, ones[:, :1], t).item(), 0.0)

    def test_gradients_flow_to_regions(self):
        regions, region_mask, words, word_mask = constructed_batch()
        regions = regions.clone().requires_grad_()
        grounding_loss(regions, region_mask, words[torch.tensor([1, 0, 3, 2])], word_mask, 0.1).backward()
        self.assertGreater(regions.grad.abs().sum().item(), 0)


class TestAuthorsFourTermLoss(unittest.TestCase):
    def test_equals_a_direct_computation(self):
        """Loops over image-caption pairs, words and regions; padding included."""
        g = torch.Generator().manual_seed(3)
        batch, dim, t = 3, 8, 0.1
        counts = [(4, 2), (2, 3), (5, 1)]  # (regions, words) per pair
        regions = F.normalize(torch.randn(batch, 5, dim, generator=g), dim=-1)
        words = F.normalize(torch.randn(batch, 3, dim, generator=g), dim=-1)
        region_mask = torch.tensor([[r > i for i in range(5)] for r, _ in counts])
        word_mask = torch.tensor([[w > i for i in range(3)] for _, w in counts])

        word_side, region_side = torch.zeros(batch, batch), torch.zeros(batch, batch)
        for a in range(batch):
            for b in range(batch):
                r = regions[a, : counts[a][0]]
                w = words[b, : counts[b][1]]
                sim = r @ w.t()  # R x W
                word_side[a, b] = torch.stack([(torch.softmax(sim[:, j] / t, 0) * sim[:, j]).sum() for j in range(sim.shape[1])]).mean()
                region_side[a, b] = torch.stack([(torch.softmax(sim[i] / t, 0) * sim[i]).sum() for i in range(sim.shape[0])]).mean()

        def ce_both(scores):
            target = torch.arange(batch)
            return F.cross_entropy(scores / t, target) + F.cross_entropy(scores.t() / t, target)

        expected = ce_both(word_side) + ce_both(region_side)
        torch.testing.assert_close(grounding_loss(regions, region_mask, words, word_mask, t, form="xpm"), expected)
        averaged = ce_both((word_side + region_side) / 2) / 2
        torch.testing.assert_close(grounding_loss(regions, region_mask, words, word_mask, t), averaged)
        with self.assertRaisesRegex(ValueError, "must be one of"):
            grounding_loss(regions, region_mask, words, word_mask, t, form="other")


class TestNounToRegionLoss(unittest.TestCase):
    def direct(self, regions, region_mask, words, word_mask, t):
        """Word by word: -log(e^{best own region} / (e^{best own region} + sum over other images' regions))."""
        losses = []
        for b in range(regions.shape[0]):
            for w in range(words.shape[1]):
                if not word_mask[b, w]:
                    continue
                word = words[b, w]
                positive = max(float(regions[b, r] @ word) for r in range(regions.shape[1]) if region_mask[b, r]) / t
                negatives = [float(regions[a, r] @ word) / t for a in range(regions.shape[0]) if a != b
                             for r in range(regions.shape[1]) if region_mask[a, r]]
                losses.append(-positive + math.log(math.exp(positive) + sum(math.exp(n) for n in negatives)))
        return sum(losses) / len(losses)

    def test_equals_a_direct_computation_with_padding(self):
        regions, region_mask, words, word_mask = constructed_batch(seed=3, batch=3, regions=5, words=3)
        region_mask[1, 3:] = False
        word_mask[2, 2] = False
        loss = grounding_loss(regions, region_mask, words, word_mask, 0.2, form="noun_to_region")
        self.assertAlmostEqual(loss.item(), self.direct(regions, region_mask, words, word_mask, 0.2), places=5)

    def test_one_way_an_unmatched_own_region_contributes_nothing(self):
        regions, region_mask, words, word_mask = constructed_batch(seed=1, batch=3, regions=5, words=2)
        # region 4 of image 0 is clutter: no word of caption 0 has it as its best region
        best = torch.einsum("rd,wd->rw", regions[0], words[0]).argmax(0)
        self.assertTrue((best != 4).all())
        caption_0 = word_mask.clone()
        caption_0[1:] = False  # only caption 0's words: image 0's regions are own regions, never negatives
        for form, clutter_moves_it in (("noun_to_region", False), ("averaged", True)):
            leaf = regions.clone().requires_grad_()
            grounding_loss(leaf, region_mask, words, caption_0, 0.1, form=form).backward()
            self.assertEqual(leaf.grad[0, 4].abs().sum().item() > 0, clutter_moves_it, form)
            self.assertGreater(leaf.grad[0, best].abs().sum().item(), 0, form)
        # with every caption, the same region is a negative for captions 1 and 2
        leaf = regions.clone().requires_grad_()
        grounding_loss(leaf, region_mask, words, word_mask, 0.1, form="noun_to_region").backward()
        self.assertGreater(leaf.grad[0, 4].abs().sum().item(), 0)

    def test_batch_of_one_is_zero_and_matched_beats_shuffled(self):
        regions, region_mask, words, word_mask = constructed_batch(batch=4)
        self.assertEqual(grounding_loss(regions[:1], region_mask[:1], words[:1], word_mask[:1], 0.1, form="noun_to_region").item(), 0.0)
        matched = grounding_loss(regions, region_mask, words, word_mask, 0.1, form="noun_to_region")
        order = torch.tensor([1, 2, 3, 0])
        shuffled = grounding_loss(regions, region_mask, words[order], word_mask[order], 0.1, form="noun_to_region")
        self.assertLess(matched.item(), 0.2)
        self.assertGreater(shuffled.item(), 3.0)
