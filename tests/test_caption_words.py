import unittest

from xpseudo.text import STOP_WORDS, CaptionMatcher, Vocabulary, caption_word_choices, caption_word_table

VOCABULARY = Vocabulary.from_names(["teddy bear", "dog", "star"], synonyms={"star": ["five pointed star"]})
CAPTIONS = [
    ["A teddy bear and two dogs on a red sofa.", "A brown teddy bear next to a dog."],
    ["Three red balloons and a five pointed star."],
    ["An empty red sofa in 2 rooms."],
]


class TestCaptionWordTable(unittest.TestCase):
    def setUp(self):
        self.matcher = CaptionMatcher(VOCABULARY)

    def test_vocabulary_mode_is_the_classes(self):
        table, words = caption_word_table(self.matcher, CAPTIONS, "vocabulary")
        self.assertIs(table, VOCABULARY)
        self.assertEqual(words, [[0, 1], [2], []])

    def test_all_mode_adds_content_words_after_the_classes_most_frequent_first(self):
        table, words = caption_word_table(self.matcher, CAPTIONS, "all")
        # "red" is used by three images, "sofa" by two; the rest once, alphabetical. Words inside a
        # class mention ("bear", "pointed") are not plain words; stop words and numbers are dropped.
        plain = ["red", "sofa", "balloons", "brown", "empty", "rooms"]
        self.assertEqual(table.names, ["teddy bear", "dog", "star"] + plain)
        self.assertEqual(table.ids, [1, 2, 3, 4, 5, 6, 7, 8, 9])
        self.assertEqual(table[2].synonyms, ("five pointed star",))  # classes keep their synonyms
        index = {n: i for i, n in enumerate(table.names)}
        self.assertEqual(words[0], [0, 1, index["red"], index["sofa"], index["brown"]])
        self.assertEqual(words[1], [2, index["red"], index["balloons"]])
        self.assertEqual(words[2], [index["empty"], index["red"], index["sofa"], index["rooms"]])

    def test_min_count_and_max_words_keep_classes_first(self):
        table, words = caption_word_table(self.matcher, CAPTIONS, "all", min_count=2)
        self.assertEqual(table.names[3:], ["red", "sofa"])
        self.assertEqual(words, [[0, 1, 3, 4], [2, 3], [3, 4]])
        _, words = caption_word_table(self.matcher, CAPTIONS, "all", min_count=2, max_words=2)
        self.assertEqual(words, [[0, 1], [2, 3], [3, 4]])

    def test_one_caption_mode_keeps_each_captions_words_apart(self):
        """The authors' stage-1 words: every word of a caption (stop words too, not numbers), class
        mentions first; one list per caption, an image kept whatever it names."""
        table, choices = caption_word_choices(self.matcher, CAPTIONS, min_count=2)
        # used by two or more images: red (3), then a, and, sofa (2 each)
        self.assertEqual(table.names, ["teddy bear", "dog", "star", "red", "a", "and", "sofa"])
        red, a, and_, sofa = 3, 4, 5, 6
        self.assertEqual(choices, [
            [[0, 1, a, and_, red, sofa], [0, 1, a]],  # "two" (a count), "on", "brown", "next", "to": one image each
            [[2, red, and_, a]],
            [[red, sofa]],  # names no class, still grounded; "2" is a number
        ])
        every_table, every = caption_word_choices(self.matcher, CAPTIONS)
        self.assertEqual([every_table.names[i] for i in every[2][0]], ["an", "empty", "red", "sofa", "in", "rooms"])
        with self.assertRaisesRegex(ValueError, "one_caption: caption_word_choices"):
            caption_word_table(self.matcher, CAPTIONS, "one_caption")

    def test_stop_words_and_bad_mode(self):
        self.assertTrue({"a", "the", "and", "of", "photo", "two"} <= STOP_WORDS)
        with self.assertRaisesRegex(ValueError, "caption word mode must be one of"):
            caption_word_table(self.matcher, CAPTIONS, "nouns")


if __name__ == "__main__":
    unittest.main()
