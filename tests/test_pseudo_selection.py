import unittest

import torch

from xpseudo.pseudo import SelectionConfig, region_word_scores, select_regions
from xpseudo.pseudo.selection import restricted_class_probabilities, select_point_regions


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


class TestCountedPicks(unittest.TestCase):
    # five regions: 0 and 1 are nearly the same box, 2 and 3 are separate objects, 4 covers 2 and 3
    BOXES = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 11], [20, 0, 30, 10], [40, 0, 50, 10], [18, 0, 52, 10]])
    S = torch.tensor([[0.9, 0.1], [0.85, 0.2], [0.5, 0.3], [0.4, 0.6], [0.6, 0.5]])

    def test_two_regions_for_two_without_the_same_object_twice(self):
        config = SelectionConfig(pick_iou=0.5)
        picked = select_regions(self.S, config, counts=[2, 1], boxes=self.BOXES)
        # word 0: region 0, then 1 is passed over (IoU 10/11 with 0); 4 is next (0.6) and overlaps nothing picked
        self.assertEqual(pairs(picked), [(0, 0), (4, 0), (3, 1)])
        three = select_regions(self.S, config, counts=[3, 1], boxes=self.BOXES)
        # region 2 lies inside 4 with IoU 10/34 <= 0.5: a third, separate pick
        self.assertEqual(pairs(three), [(0, 0), (4, 0), (2, 0), (3, 1)])
        # without suppression (the authors' top-k) the near-duplicate comes second
        self.assertEqual(pairs(select_regions(self.S, SelectionConfig(), counts=[2, 1], boxes=self.BOXES)), [(0, 0), (1, 0), (3, 1)])

    def test_a_count_above_the_regions_left_gives_what_there_is(self):
        picked = select_regions(self.S, SelectionConfig(pick_iou=0.05), counts=[5, 1], boxes=self.BOXES)
        self.assertEqual(pairs(picked), [(0, 0), (4, 0), (3, 1)])  # 2 and 3 overlap region 4 (IoU 0.29 > 0.05)

    def test_counts_are_checked(self):
        with self.assertRaisesRegex(ValueError, "at least 1 region"):
            select_regions(self.S, counts=[1])
        with self.assertRaisesRegex(ValueError, "at least 1 region"):
            select_regions(self.S, counts=[0, 2])
        with self.assertRaisesRegex(ValueError, "pick_iou"):
            SelectionConfig(pick_iou=0)

    def test_given_confidences_are_the_picks_and_min_score_reads_them(self):
        confidences = torch.tensor([[0.7, 0.0], [0.1, 0.0], [0.1, 0.2], [0.1, 0.4], [0.1, 0.1]])
        picked = select_regions(self.S, SelectionConfig(min_score=0.3), confidences=confidences)
        self.assertEqual(pairs(picked), [(0, 0), (3, 1)])
        self.assertEqual(picked.confidences.tolist(), [0.699999988079071, 0.4000000059604645])
        self.assertEqual(len(select_regions(self.S, SelectionConfig(min_score=0.5), confidences=confidences)), 1)


class TestExclusiveAssignment(unittest.TestCase):
    BOXES = TestCountedPicks.BOXES  # 0 and 1 nearly the same box, 2 and 3 apart, 4 covers 2 and 3

    def test_a_word_does_not_take_the_object_another_word_explains_better(self):
        # word 0 (a base word, sure of region 0); word 1 (a novel word, low everywhere, best on 0)
        S = torch.tensor([[0.9, 0.4], [0.85, 0.35], [0.2, 0.3], [0.1, 0.25], [0.3, 0.1]])
        self.assertEqual(pairs(select_regions(S, SelectionConfig(pick_iou=0.5), boxes=self.BOXES)), [(0, 0), (0, 1)])
        exclusive = SelectionConfig(pick_iou=0.5, assignment="exclusive")
        picked = select_regions(S, exclusive, boxes=self.BOXES)
        # (0, 1) is taken by word 0; (1, 1) overlaps region 0 by IoU 10/11; region 2 is the next free one
        self.assertEqual(pairs(picked), [(0, 0), (2, 1)])
        self.assertTrue(torch.allclose(picked.scores, torch.tensor([0.9, 0.3])))
        self.assertTrue(torch.allclose(picked.confidences, torch.sigmoid(torch.tensor([0.9, 0.3]))))
        # only the taken region itself is blocked without boxes, or at PICK_IOU 1
        self.assertEqual(pairs(select_regions(S, exclusive)), [(0, 0), (1, 1)])
        self.assertEqual(pairs(select_regions(S, SelectionConfig(pick_iou=1.0, assignment="exclusive"), boxes=self.BOXES)), [(0, 0), (1, 1)])

    def test_counted_picks_do_not_cover_another_words_object(self):
        S = TestCountedPicks.S
        # per word, word 0's second pick is region 4, the box around objects 2 and 3
        self.assertEqual(pairs(select_regions(S, SelectionConfig(pick_iou=0.2), counts=[2, 1], boxes=self.BOXES)), [(0, 0), (4, 0), (3, 1)])
        # exclusive, best first over both words: (0, 0); (3, 1) at 0.6 before (4, 0) at 0.6 (lower
        # region first), and region 4 overlaps 3 by IoU 0.29 > 0.2; word 0 then takes region 2
        picked = select_regions(S, SelectionConfig(pick_iou=0.2, assignment="exclusive"), counts=[2, 1], boxes=self.BOXES)
        self.assertEqual(pairs(picked), [(0, 0), (2, 0), (3, 1)])
        # a word asking for more regions than are free gets what is free
        self.assertEqual(pairs(select_regions(S, SelectionConfig(pick_iou=0.2, assignment="exclusive"), counts=[5, 1], boxes=self.BOXES)),
                         [(0, 0), (2, 0), (3, 1)])

    def test_confidences_set_the_order_and_min_score_cuts(self):
        S = torch.tensor([[0.9, 0.1], [0.1, 0.8]])
        confidences = torch.tensor([[0.2, 0.6], [0.1, 0.3]])
        picked = select_regions(S, SelectionConfig(assignment="exclusive"), confidences=confidences)
        # (0, 1) first at 0.6 although S prefers (0, 0); word 0 is left region 1
        self.assertEqual(pairs(picked), [(1, 0), (0, 1)])
        self.assertTrue(torch.allclose(picked.scores, torch.tensor([0.1, 0.1])))
        self.assertTrue(torch.allclose(picked.confidences, torch.tensor([0.1, 0.6])))
        self.assertEqual(pairs(select_regions(S, SelectionConfig(assignment="exclusive", min_score=0.15), confidences=confidences)), [(0, 1)])

    def test_empty_and_bad_assignment(self):
        for S in (torch.zeros(0, 3), torch.zeros(5, 0)):
            self.assertEqual(len(select_regions(S, SelectionConfig(assignment="exclusive"))), 0)
        with self.assertRaisesRegex(ValueError, "assignment must be one of"):
            SelectionConfig(assignment="hungarian")


class TestRestrictedClassifier(unittest.TestCase):
    def test_softmax_over_the_named_classes_and_background(self):
        regions = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
        words = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
        background = torch.tensor([0.0, 1.0])
        probabilities = restricted_class_probabilities(regions, words, background, temperature=0.5)
        logits = torch.tensor([[1.0, 0.6, 0.0], [0.0, 0.8, 1.0], [0.6, 1.0, 0.8]]) / 0.5
        expected = logits.exp() / logits.exp().sum(dim=1, keepdim=True)
        self.assertTrue(torch.allclose(probabilities, expected[:, :2]))
        # picking by probability: each word's most probable region
        self.assertEqual(select_regions(probabilities).regions.tolist(), [0, 2])

    def test_a_background_region_loses_a_word_it_is_as_close_to(self):
        # regions 0 and 1 have the same cosine (0.6) with the word; region 1 is much closer to the
        # background, so the classifier gives the word to region 0 where the cosine is a tie
        regions = torch.tensor([[0.6, 0.8, 0.0], [0.6, 0.0, 0.8]])
        word = torch.tensor([[1.0, 0.0, 0.0]])
        background = torch.tensor([0.0, 0.0, 1.0])
        self.assertTrue(torch.allclose(region_word_scores(regions, word)[:, 0], torch.tensor([0.6, 0.6])))
        probabilities = restricted_class_probabilities(regions, word, background, temperature=0.1)
        self.assertGreater(probabilities[0, 0], 0.99)
        self.assertLess(probabilities[1, 0], 0.15)


class TestPointPicks(unittest.TestCase):
    BOXES = torch.tensor([[0.0, 0, 10, 10], [0, 0, 30, 10], [20, 0, 30, 10], [50, 50, 60, 60]])

    def test_the_best_region_holding_the_point_alone(self):
        points = torch.tensor([[5.0, 5.0], [25.0, 5.0], [100.0, 100.0]])
        # region 1 holds points 0 and 1 and scores best for both: each point takes its own box instead
        S = torch.tensor([[0.2, 0.1, 0.0], [0.9, 0.9, 0.9], [0.1, 0.3, 0.0], [0.95, 0.95, 0.95]])
        picked = select_point_regions(S, self.BOXES, points)
        self.assertEqual(pairs(picked), [(0, 0), (2, 1)])  # point 2 lies in no region: nothing
        self.assertTrue(torch.allclose(picked.scores, torch.tensor([0.2, 0.3])))

    def test_a_shared_region_is_used_where_no_region_holds_the_point_alone(self):
        points = torch.tensor([[15.0, 5.0], [25.0, 5.0]])  # point 0 lies only in region 1, which also holds point 1
        S = torch.tensor([[0.0, 0.0], [0.5, 0.9], [0.0, 0.2], [0.0, 0.0]])
        self.assertEqual(pairs(select_point_regions(S, self.BOXES, points)), [(1, 0), (2, 1)])

    def test_no_points_or_no_regions(self):
        self.assertEqual(len(select_point_regions(torch.zeros(4, 0), self.BOXES, torch.zeros(0, 2))), 0)
        empty = select_point_regions(torch.zeros(0, 2), torch.zeros(0, 4), torch.tensor([[1.0, 1.0], [2.0, 2.0]]))
        self.assertEqual(len(empty), 0)
        self.assertEqual(empty.regions.dtype, torch.long)


if __name__ == "__main__":
    unittest.main()


class TestScribbleSelection(unittest.TestCase):
    def test_most_of_the_stroke_least_of_the_others_then_confidence(self):
        from xpseudo.pseudo.selection import select_scribble_regions

        coverage = torch.tensor([[0.9, 0.0, 0.0], [0.9, 0.5, 0.0], [0.5, 0.0, 0.0], [0.6, 0.5, 0.0]])
        leakage = torch.tensor([[0.0, 0.0, 0.0], [0.4, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
        confidences = torch.tensor([[0.2, 0.1, 0.5], [0.9, 0.3, 0.5], [0.95, 0.3, 0.5], [0.1, 0.8, 0.5]])
        picked = select_scribble_regions(coverage, leakage, confidences)
        # scribble 0: region 0 (0.9 - 0) beats region 1 (0.9 - 0.4) whatever their confidences;
        # scribble 1: regions 1 and 3 tie at 0.5, region 3 is more confident; scribble 2: no mask touches it
        self.assertEqual((picked.regions.tolist(), picked.words.tolist()), ([0, 3], [0, 1]))
        self.assertTrue(torch.allclose(picked.confidences, torch.tensor([0.2, 0.8])))
        strict = select_scribble_regions(coverage, leakage, confidences, config=SelectionConfig(min_score=0.5))
        self.assertEqual(strict.words.tolist(), [1])

    def test_points_along_the_stroke_and_the_masks_holding_them(self):
        from xpseudo.pseudo.selection import mask_covers, scribble_points

        points = scribble_points(torch.tensor([[0.0, 0.0], [3.0, 4.0], [3.0, 6.0]]))
        self.assertEqual(len(points), 1 + 5 + 2)  # every pixel or closer: 5 steps on the first segment, 2 on the second
        self.assertTrue(torch.allclose(points[[0, 5, 7]], torch.tensor([[0.0, 0.0], [3.0, 4.0], [3.0, 6.0]])))
        left_half = torch.zeros(1, 4, 4)
        left_half[0, :, :2] = 1
        # box 10..18: x 11 reads the left half, x 17 the right one, (5, 5) is outside the box
        inside = mask_covers(left_half, torch.tensor([[10.0, 10.0, 18.0, 18.0]]), torch.tensor([[11.0, 14.0], [17.0, 14.0], [5.0, 5.0]]))
        self.assertEqual(inside.tolist(), [[True, False, False]])
