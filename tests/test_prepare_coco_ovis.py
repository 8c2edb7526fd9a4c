import json
import os
import tempfile
import unittest

from xpseudo.data.metadata_files import metadata_file
from xpseudo.data.split import OvisSplit
from xpseudo.text import Vocabulary

from tests.helpers import run_script


def coco_like(split: OvisSplit, vocabulary: Vocabulary):
    """A tiny COCO 2017-format instances file with all 65 split classes plus two outside it."""
    categories = [{"id": c.id, "name": c.name, "supercategory": "x"} for c in vocabulary]
    categories += [{"id": 11, "name": "fire hydrant", "supercategory": "x"}, {"id": 58, "name": "hot dog", "supercategory": "x"}]
    ids = {c["name"]: c["id"] for c in categories}
    images = [{"id": i, "file_name": f"{i:012d}.jpg", "height": 100, "width": 100} for i in (1, 2, 3, 4)]
    box = {"bbox": [1, 1, 10, 10], "area": 100, "segmentation": [[1, 1, 11, 1, 11, 11, 1, 11]], "iscrowd": 0}
    annotations = [
        dict(box, id=1, image_id=1, category_id=ids["person"]),  # base
        dict(box, id=2, image_id=1, category_id=ids["dog"]),  # novel
        dict(box, id=3, image_id=2, category_id=ids["cat"]),  # novel only: image dropped from base
        dict(box, id=4, image_id=3, category_id=ids["hot dog"]),  # outside the split
        dict(box, id=5, image_id=4, category_id=ids["toilet"], iscrowd=1),  # base, crowd
    ]
    return {"info": {}, "licenses": [], "images": images, "annotations": annotations, "categories": categories}


class TestPrepareCocoOvis(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.annotations = os.path.join(self.tmp.name, "coco", "annotations")
        os.makedirs(self.annotations)
        self.split = OvisSplit.from_file(metadata_file("coco_ovis_split.json"))
        self.vocabulary = Vocabulary.from_file(metadata_file("coco_ovis_vocabulary.json"))
        data = coco_like(self.split, self.vocabulary)
        for name in ("instances_train2017.json", "instances_val2017.json"):
            with open(os.path.join(self.annotations, name), "w") as f:
                json.dump(data, f)
        captions = {"images": data["images"], "annotations": [
            {"id": 7, "image_id": 1, "caption": "A man and his dog."}, {"id": 8, "image_id": 2, "caption": "A cat."}]}
        with open(os.path.join(self.annotations, "captions_train2017.json"), "w") as f:
            json.dump(captions, f)

    def tearDown(self):
        self.tmp.cleanup()

    def load(self, name):
        with open(os.path.join(self.annotations, "ovis", name)) as f:
            return json.load(f)

    def test_converted_files(self):
        run_script("datasets/prepare_coco_ovis.py", "--coco-root", os.path.join(self.tmp.name, "coco"))
        base, full, val = (self.load(n) for n in ("instances_train2017_base.json", "instances_train2017_all.json", "instances_val2017.json"))
        for data in (base, full, val):
            self.assertEqual([(c["id"], c["name"]) for c in data["categories"]], list(zip(self.vocabulary.ids, self.vocabulary.names)))
        self.assertEqual([a["id"] for a in base["annotations"]], [1, 5])
        self.assertEqual([im["id"] for im in base["images"]], [1, 4])
        self.assertEqual([a["id"] for a in full["annotations"]], [1, 2, 3, 5])
        self.assertEqual([im["id"] for im in full["images"]], [1, 2, 3, 4])
        self.assertEqual(val["annotations"], full["annotations"])
        captions = self.load("captions_train2017.json")
        self.assertEqual([(a["image_id"], a["caption"]) for a in captions["annotations"]], [(1, "A man and his dog."), (2, "A cat.")])

    def test_split_class_missing_from_coco(self):
        path = os.path.join(self.tmp.name, "split.json")
        with open(path, "w") as f:
            json.dump({"base": ["person"], "novel": ["unicorn"]}, f)
        result = run_script("datasets/prepare_coco_ovis.py", "--coco-root", os.path.join(self.tmp.name, "coco"), "--split", path, check=False)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("novel category 'unicorn' is not a category of", result.stderr)
        self.assertIn("instances_train2017.json", result.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.annotations, "ovis")))
