import json
import os
import tempfile
import unittest

from xpseudo.text import CaptionMatcher, Vocabulary, inflections, plural_forms, singular_forms

from tests.helpers import run_script


def matched_names(matcher, caption):
    return [(matcher.vocabulary[m.class_index].name, m.phrase) for m in matcher.find(caption)]


class TestInflection(unittest.TestCase):
    def test_regular_and_irregular_plurals(self):
        cases = {"dog": "dogs", "bus": "buses", "box": "boxes", "knife": "knives", "mouse": "mice",
                 "person": "people", "pony": "ponies", "tie": "ties", "potato": "potatoes", "glass": "glasses"}
        for singular, plural in cases.items():
            self.assertIn(plural, plural_forms(singular), singular)
        self.assertEqual(plural_forms("sheep"), {"sheep"})

    def test_singular_of_plural_names(self):
        self.assertIn("ski", singular_forms("skis"))
        self.assertIn("scissor", singular_forms("scissors"))
        self.assertEqual(singular_forms("mice"), {"mouse"})
        self.assertEqual(singular_forms("bus"), set())
        self.assertIn("skis", inflections("ski"))


class TestCaptionMatcher(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.vocabulary = Vocabulary.from_names(
            ["dog", "bear", "teddy bear", "hot dog", "mouse", "knife", "bus_(vehicle)", "television_set",
             "sheep", "traffic light", "skis", "person", "tie", "cookie", "couch"],
            {"person": ["man", "woman"], "couch": ["sofa"], "bus_(vehicle)": ["autobus"]},
        )
        cls.matcher = CaptionMatcher(cls.vocabulary)

    def test_case_insensitive_whole_words(self):
        self.assertEqual(matched_names(self.matcher, "A DOG runs"), [("dog", "dog")])
        self.assertEqual(matched_names(self.matcher, "a dogged effort, a hotdogs stand"), [])
        self.assertEqual(matched_names(self.matcher, "the dog's bowl"), [("dog", "dog")])

    def test_plurals_regular_and_irregular(self):
        self.assertEqual(
            matched_names(self.matcher, "Three mice, two knives; many buses and sheep."),
            [("mouse", "mice"), ("knife", "knives"), ("bus_(vehicle)", "buses"), ("sheep", "sheep")],
        )
        self.assertEqual(matched_names(self.matcher, "ties and cookies"), [("tie", "ties"), ("cookie", "cookies")])

    def test_plural_vocabulary_name_matches_singular(self):
        self.assertEqual(matched_names(self.matcher, "a ski and some skis"), [("skis", "ski"), ("skis", "skis")])

    def test_multi_word_names_and_their_plurals(self):
        self.assertEqual(matched_names(self.matcher, "traffic lights by the road"), [("traffic light", "traffic lights")])
        self.assertEqual(matched_names(self.matcher, "a traffic-light"), [("traffic light", "traffic light")])

    def test_longest_match_wins(self):
        self.assertEqual(matched_names(self.matcher, "two teddy bears and a bear"), [("teddy bear", "teddy bears"), ("bear", "bear")])
        self.assertEqual(matched_names(self.matcher, "a hot dog"), [("hot dog", "hot dog")])
        self.assertEqual(matched_names(self.matcher, "a hot, wet dog"), [("dog", "dog")])

    def test_lvis_style_names_and_synonyms(self):
        self.assertEqual(matched_names(self.matcher, "an autobus"), [("bus_(vehicle)", "autobus")])
        self.assertEqual(matched_names(self.matcher, "a (vehicle)"), [])
        self.assertEqual(matched_names(self.matcher, "an old television set"), [("television_set", "television set")])
        self.assertEqual(matched_names(self.matcher, "Women on a sofa"), [("person", "women"), ("couch", "sofa")])

    def test_punctuation(self):
        self.assertEqual(matched_names(self.matcher, "dog,bear;mouse!knife?"), [("dog", "dog"), ("bear", "bear"), ("mouse", "mouse"), ("knife", "knife")])

    def test_captions_of_an_image_are_unioned(self):
        names = [self.vocabulary[i].name for i in self.matcher.classes_in(["a dog", "a man and a dog", "nothing here"])]
        self.assertEqual(names, ["dog", "person"])
        self.assertEqual(self.matcher.classes_in([]), [])

    def test_synonyms_can_be_switched_off(self):
        matcher = CaptionMatcher(self.vocabulary, use_synonyms=False)
        self.assertEqual(matched_names(matcher, "a man on a sofa with a person"), [("person", "person")])

    def test_written_name_beats_an_inflection_of_another_class(self):
        vocabulary = Vocabulary.from_names(["glass", "glasses"])
        self.assertEqual(matched_names(CaptionMatcher(vocabulary), "glasses"), [("glasses", "glasses")])

    def test_blockers_use_up_their_words(self):
        # COCO's split drops "hot dog", but its words must not turn into a "dog"
        vocabulary = Vocabulary.from_names(["dog", "table", "light"])
        plain = CaptionMatcher(vocabulary)
        blocked = CaptionMatcher(vocabulary, blockers=["hot dog", "traffic light", "dog"])
        caption = "Two hot dogs on a table next to a dog under a traffic light."
        self.assertEqual(matched_names(plain, caption), [("dog", "dogs"), ("table", "table"), ("dog", "dog"), ("light", "light")])
        # a blocker never shadows a class's own name ("dog" stays a class)
        self.assertEqual(matched_names(blocked, caption), [("table", "table"), ("dog", "dog")])
        self.assertEqual(blocked.classes_in([caption, "hot dogs"]), [0, 1])


class TestCaptionStatsTool(unittest.TestCase):
    def test_counts_images_per_class(self):
        with tempfile.TemporaryDirectory() as d:
            captions = {"images": [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "b.png"}],
                        "annotations": [{"id": 1, "image_id": 1, "caption": "Two dogs and a man."},
                                        {"id": 2, "image_id": 1, "caption": "A dog."},
                                        {"id": 3, "image_id": 2, "caption": "Buses"}]}
            vocabulary = [{"id": 5, "name": "dog"}, {"id": 7, "name": "bus"}, {"id": 9, "name": "person", "synonyms": ["man"]}]
            for name, data in (("c.json", captions), ("v.json", vocabulary)):
                with open(os.path.join(d, name), "w") as f:
                    json.dump(data, f)
            out = os.path.join(d, "out.json")
            result = run_script("tools/caption_stats.py", "--captions", os.path.join(d, "c.json"), "--vocabulary", os.path.join(d, "v.json"), "--json-out", out)
            self.assertIn("captions/s", result.stdout)
            with open(out) as f:
                stats = json.load(f)
            self.assertEqual(stats["per_image"], {"1": ["dog", "person"], "2": ["bus"]})
            self.assertEqual(stats["counts"], {"dog": 1, "bus": 1, "person": 1})
            self.assertGreater(stats["captions_per_second"], 0)
