import unittest

import torch

from xpseudo.pseudo import SelectionConfig, region_word_scores, select_regions


def pairs(selection):
    return list(zip(selection.regions.tolist(), selection.words.tolist()))


class TestRegionWordScores(unittest.TestCase):
    def test_inner_products(self):
        regions = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
        words = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.6, 0.8]])
        expected = torch.tensor([[0.0, 1.0, 0.6], [0.8, 0.6, 1.0]])
        self.assertTrue(torch.allclose(region_word_scores(regions, words), expected))
        with self.assertRaisesRegex(ValueError, "dimension 2, word embeddings 3"):
            region_word_scores(regions, torch.ones(1, 3))


class TestSelectRegions(unittest.TestCase):
    # 4 regions x 3 words
    S = torch.tensor([
        [0.1, 0.9, 0.0],
        [0.7, 0.8, 0.2],
        [0.7, 0.1, 0.3],
        [0.2, 0.0, 0.3],
    ])

    def test_each_word_takes_its_best_region_ties_to_the_lower_index(self):
        selection = select_regions(self.S)
        # word 0: regions 1 and 2 tie at 0.7 -> 1; word 2: regions 2 and 3 tie at 0.3 -> 2
        self.assertEqual(pairs(selection), [(1, 0), (0, 1), (2, 2)])
        self.assertTrue(torch.allclose(selection.scores, torch.tensor([0.7, 0.9, 0.3])))
        self.assertTrue(torch.allclose(selection.confidences, torch.sigmoid(torch.tensor([0.7, 0.9, 0.3]))))

    def test_top_k_keeps_score_order_and_caps_at_the_number_of_regions(self):
        self.assertEqual(pairs(select_regions(self.S, SelectionConfig(top_k=2))), [(1, 0), (2, 0), (0, 1), (1, 1), (2, 2), (3, 2)])
        self.assertEqual(len(select_regions(self.S, SelectionConfig(top_k=10))), 12)

    def test_a_word_with_no_region_above_the_minimum(self):
        config = SelectionConfig(min_score=float(torch.sigmoid(torch.tensor(0.5))), temperature=1.0)
        selection = select_regions(self.S, config)
        self.assertEqual(pairs(selection), [(1, 0), (0, 1)])  # word 2 (best 0.3) gets nothing
        hot = select_regions(self.S, SelectionConfig(min_score=0.999, temperature=0.05))  # sigmoid(6) < 0.999 < sigmoid(14)
        self.assertEqual(pairs(hot), [(1, 0), (0, 1)])

    def test_min_score_without_the_temperature_drops_a_known_fraction(self):
        # cosines of each word's best region: 0.6, 0.3, 0.1, -0.2 (four words, the pick is region 0)
        best = torch.tensor([0.6, 0.3, 0.1, -0.2])
        scores = torch.stack([best, best - 0.5, best - 0.9])
        # the authors' confidence sigmoid(S): 0.646, 0.574, 0.525, 0.450; MIN_SCORE 0.55 keeps half
        kept = select_regions(scores, SelectionConfig(min_score=0.55, temperature=1.0))
        self.assertEqual(kept.words.tolist(), [0, 1])
        self.assertTrue(torch.allclose(kept.confidences, torch.sigmoid(best[:2])))
        # at temperature 0.1 the same picks score 0.998, 0.953, 0.731, 0.119: the threshold means
        # something else entirely (three kept)
        self.assertEqual(select_regions(scores, SelectionConfig(min_score=0.55, temperature=0.1)).words.tolist(), [0, 1, 2])

    def test_one_region_wanted_by_two_words(self):
        S = torch.tensor([[0.9, 0.8, 0.1], [0.5, 0.7, 0.1], [0.0, 0.0, 0.1]])
        self.assertEqual(pairs(select_regions(S)), [(0, 0), (0, 1), (0, 2)])
        # region 0 stays with word 0 (0.9 > 0.8); word 1 is not given a replacement; word 2's
        # best region is a three-way tie at 0.1, resolved to region 0, which word 0 beats
        self.assertEqual(pairs(select_regions(S, SelectionConfig(deduplicate=True))), [(0, 0)])
        # with two picks per word, word 1 wins region 1 (0.7 > word 0's 0.5); word 2 loses both
        self.assertEqual(pairs(select_regions(S, SelectionConfig(top_k=2, deduplicate=True))), [(0, 0), (1, 1)])

    def test_dedup_tie_goes_to_the_lower_word(self):
        S = torch.tensor([[0.5, 0.5], [0.1, 0.2]])
        self.assertEqual(pairs(select_regions(S, SelectionConfig(deduplicate=True))), [(0, 0)])

    def test_empty_proposals_and_no_words(self):
        for S in (torch.zeros(0, 3), torch.zeros(5, 0), torch.zeros(0, 0)):
            selection = select_regions(S, SelectionConfig(top_k=3, deduplicate=True))
            self.assertEqual(len(selection), 0)
            self.assertEqual(selection.regions.dtype, torch.long)

    def test_bad_config(self):
        with self.assertRaisesRegex(ValueError, "top_k must be >= 1"):
            SelectionConfig(top_k=0)
        with self.assertRaisesRegex(ValueError, "temperature must be > 0"):
            SelectionConfig(temperature=0)


if __name__ == "__main__":
    unittest.main()
