import json
import os
import tempfile
import unittest

from xpseudo.data.metadata_files import metadata_file
from xpseudo.data.split import OvisSplit
from xpseudo.text import Vocabulary, display_name, name_to_words
from xpseudo.utils.io import InputError


class TestVocabularyFiles(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()

    def tearDown(self):
        self.dir.cleanup()

    def write(self, name, data):
        path = os.path.join(self.dir.name, name)
        with open(path, "w") as f:
            f.write(data if isinstance(data, str) else json.dumps(data))
        return path

    def test_list_format_sorted_by_id(self):
        path = self.write("v.json", [{"id": 3, "name": "cat"}, {"id": 1, "name": "dog", "synonyms": ["puppy"]}])
        vocabulary = Vocabulary.from_file(path)
        self.assertEqual(vocabulary.names, ["dog", "cat"])
        self.assertEqual(vocabulary.ids, [1, 3])
        self.assertEqual(vocabulary[0].synonyms, ("puppy",))

    def test_coco_and_lvis_annotation_files(self):
        lvis = {"images": [], "annotations": [], "categories": [
            {"id": 2, "name": "bus_(vehicle)", "synonyms": ["bus_(vehicle)", "autobus"], "frequency": "f", "def": "a vehicle"},
            {"id": 1, "name": "aerosol_can", "synonyms": ["aerosol_can", "spray_can"], "frequency": "c"}]}
        vocabulary = Vocabulary.from_file(self.write("lvis.json", lvis))
        self.assertEqual(vocabulary.names, ["aerosol_can", "bus_(vehicle)"])
        self.assertEqual(vocabulary[1].names, ("bus_(vehicle)", "autobus"))
        self.assertEqual(display_name("bus_(vehicle)"), "bus (vehicle)")
        self.assertEqual(name_to_words("bus_(vehicle)"), ("bus",))

    def test_shipped_vocabularies_cover_their_splits(self):
        for family in ("shapes", "coco_ovis"):
            vocabulary = Vocabulary.from_file(metadata_file(f"{family}_vocabulary.json"))
            split = OvisSplit.from_file(metadata_file(f"{family}_split.json"))
            self.assertEqual(sorted(vocabulary.names), sorted(split.names))
        coco = OvisSplit.from_file(metadata_file("coco_ovis_split.json"))
        self.assertEqual((len(coco.base), len(coco.novel)), (48, 17))

    def test_bad_input_names_file_and_item(self):
        cases = {
            "missing": (None, "does not exist"),
            "malformed.json": ('[{"id": 1, "name": "a"', "malformed JSON"),
            "no_name.json": ([{"id": 1}], "categories[0] lacks field(s) 'name'"),
            "dup.json": ([{"id": 1, "name": "a"}, {"id": 2, "name": "a"}], "repeats the name 'a'"),
            "syn.json": ([{"id": 1, "name": "a", "synonyms": "b"}], "'synonyms' must be a list"),
        }
        for name, (content, message) in cases.items():
            path = os.path.join(self.dir.name, name) if content is None else self.write(name, content)
            with self.assertRaises(InputError) as e:
                Vocabulary.from_file(path)
            self.assertIn(path, str(e.exception))
            self.assertIn(message, str(e.exception))


class TestSplitFiles(unittest.TestCase):
    def test_bad_split_files(self):
        with tempfile.TemporaryDirectory() as d:
            for data, message in (
                ({"base": ["a"]}, "field 'novel' must be a list"),
                ({"base": ["a", "b"], "novel": ["b"]}, "both base and novel"),
                ({"base": ["a", "a"], "novel": []}, "repeats ['a']"),
            ):
                path = os.path.join(d, "split.json")
                with open(path, "w") as f:
                    json.dump(data, f)
                with self.assertRaises(InputError) as e:
                    OvisSplit.from_file(path)
                self.assertIn(message, str(e.exception))

    def test_split_class_not_in_dataset(self):
        split = OvisSplit(["cat"], ["unicorn"], source="split.json")
        with self.assertRaises(InputError) as e:
            split.check_classes(["cat", "dog"], "instances.json")
        self.assertEqual(str(e.exception), "split.json: novel category 'unicorn' is not a category of instances.json")
        self.assertEqual(OvisSplit(["cat"], ["dog"]).class_ids(["dog", "cow", "cat"], "base"), [2])
