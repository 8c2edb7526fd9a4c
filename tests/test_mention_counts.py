"""How many objects a caption mention names (no detectron2)."""
import unittest

from xpseudo.text import CaptionMatcher, Vocabulary
from xpseudo.text.caption_matcher import WordMatch
from xpseudo.text.mention_counts import is_plural_mention, mention_count

VOCABULARY = Vocabulary.from_names(["star", "dog", "sheep", "hot dog"])


def counts(caption, plural_count=3):
    matcher = CaptionMatcher(VOCABULARY)
    words = matcher.words(caption)
    return [(m.phrase, mention_count(words, m, VOCABULARY[m.class_index].names, plural_count)) for m in matcher.find(caption)]


class TestMentionCount(unittest.TestCase):
    def test_number_words_digits_and_plurals(self):
        self.assertEqual(counts("Two stars and a dog."), [("stars", 2), ("dog", 1)])
        self.assertEqual(counts("three small red stars"), [("stars", 3)])  # the number two words back
        self.assertEqual(counts("12 dogs"), [("dogs", 12)])
        self.assertEqual(counts("stars on a gray background"), [("stars", 3)])  # plural, no number
        self.assertEqual(counts("several stars, a pair of dogs"), [("stars", 3), ("dogs", 2)])

    def test_a_count_does_not_leak_across_a_list(self):
        self.assertEqual(counts("two dogs and stars"), [("dogs", 2), ("stars", 3)])
        self.assertEqual(counts("two dogs and a star"), [("dogs", 2), ("star", 1)])
        self.assertEqual(counts("a photo from 2018 with a dog"), [("dog", 1)])  # a year is no count
        self.assertEqual(counts("four very big red stars"), [("stars", 3)])  # beyond the look-back: a plural

    def test_unchanged_plurals_and_multi_word_names(self):
        self.assertEqual(counts("sheep in a field"), [("sheep", 1)])
        self.assertEqual(counts("two sheep"), [("sheep", 2)])
        self.assertEqual(counts("hot dogs"), [("hot dogs", 3)])
        self.assertTrue(is_plural_mention("hot dogs", ["hot dog"]))
        self.assertFalse(is_plural_mention("hot dog", ["hot dog"]))

    def test_bad_plural_count(self):
        with self.assertRaisesRegex(ValueError, "plural_count"):
            mention_count(["stars"], WordMatch(0, "stars", 0, 1), ["star"], 0)


if __name__ == "__main__":
    unittest.main()
