import filecmp
import json
import os
import tempfile
import unittest

import numpy as np
from pycocotools import mask as mask_util

from xpseudo.data.captions import load_coco_captions
from xpseudo.text import CaptionMatcher, Vocabulary

from tests.helpers import run_script


def tree_files(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


class TestPrepareShapes(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.root = os.path.join(cls.tmp.name, "a")
        run_script("datasets/prepare_shapes.py", "--output", cls.root, "--seed", "3", "--num-train", "60", "--num-val", "20", "--image-size", "96")

        def load(name):
            with open(os.path.join(cls.root, "annotations", name)) as f:
                return json.load(f)

        cls.all, cls.base, cls.val = load("instances_train_all.json"), load("instances_train_base.json"), load("instances_val.json")
        cls.vocabulary = Vocabulary.from_file(os.path.join(cls.root, "vocabulary.json"))
        with open(os.path.join(cls.root, "split.json")) as f:
            cls.split = json.load(f)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_same_seed_byte_identical_other_seed_differs(self):
        again = os.path.join(self.tmp.name, "b")
        other = os.path.join(self.tmp.name, "c")
        run_script("datasets/prepare_shapes.py", "--output", again, "--seed", "3", "--num-train", "60", "--num-val", "20", "--image-size", "96")
        run_script("datasets/prepare_shapes.py", "--output", other, "--seed", "4", "--num-train", "60", "--num-val", "20", "--image-size", "96")
        files = tree_files(self.root)
        self.assertEqual(files, tree_files(again))
        self.assertEqual(len(files), 60 + 20 + 10)
        match, mismatch, errors = filecmp.cmpfiles(self.root, again, files, shallow=False)
        self.assertEqual((mismatch, errors), ([], []))
        _, mismatch, _ = filecmp.cmpfiles(self.root, other, files, shallow=False)
        self.assertIn("annotations/instances_train_all.json", mismatch)
        self.assertGreater(len(mismatch), 60)

    def test_classes_and_split(self):
        self.assertGreaterEqual(len(self.vocabulary), 8)
        self.assertGreaterEqual(len(self.split["novel"]), 3)
        for data in (self.all, self.base, self.val):
            self.assertEqual([c["name"] for c in data["categories"]], self.vocabulary.names)

    def test_base_file_has_only_base_instances_and_images_with_one(self):
        novel_ids = {c.id for c in self.vocabulary if c.name in self.split["novel"]}
        self.assertTrue(any(a["category_id"] in novel_ids for a in self.all["annotations"]))
        self.assertFalse(any(a["category_id"] in novel_ids for a in self.base["annotations"]))
        expected = [a for a in self.all["annotations"] if a["category_id"] not in novel_ids]
        self.assertEqual(self.base["annotations"], expected)
        self.assertEqual({im["id"] for im in self.base["images"]}, {a["image_id"] for a in expected})
        self.assertLess(len(self.base["images"]), len(self.all["images"]))

    def test_box_weak_labels_are_the_novel_instances_without_masks(self):
        with open(os.path.join(self.root, "annotations", "boxes_train.json")) as f:
            boxes = json.load(f)
        novel_ids = {c.id for c in self.vocabulary if c.name in self.split["novel"]}
        expected = [{k: v for k, v in a.items() if k != "segmentation"} for a in self.all["annotations"] if a["category_id"] in novel_ids]
        self.assertEqual(boxes["annotations"], expected)
        self.assertEqual(boxes["images"], self.all["images"])
        self.assertEqual(boxes["categories"], self.all["categories"])

    def test_tags_and_points_name_the_novel_instances(self):
        novel = [a for a in self.all["annotations"] if a["category_id"] in {c.id for c in self.vocabulary if c.name in self.split["novel"]}]
        with open(os.path.join(self.root, "annotations", "tags_train.json")) as f:
            tags = json.load(f)
        expected = {}
        for a in novel:
            expected.setdefault(a["image_id"], set()).add(a["category_id"])
        self.assertEqual([im["id"] for im in tags["images"]], [im["id"] for im in self.all["images"]])
        for image in tags["images"]:  # every image listed, its novel classes once each
            self.assertEqual(sorted(image["pos_category_ids"]), sorted(expected.get(image["id"], ())))
        self.assertEqual(tags["annotations"], [])
        with open(os.path.join(self.root, "annotations", "points_train.json")) as f:
            points = json.load(f)
        self.assertEqual([(p["id"], p["image_id"], p["category_id"]) for p in points["annotations"]],
                         [(a["id"], a["image_id"], a["category_id"]) for a in novel])
        for point, ann in zip(points["annotations"], novel):  # one click, inside the object's visible mask
            self.assertEqual(point["point_labels"], [1])
            (x, y), = point["point_coords"]
            self.assertEqual(mask_util.decode(ann["segmentation"])[y, x], 1)

    def test_one_short_stroke_inside_each_novel_object(self):
        novel = [a for a in self.all["annotations"] if a["category_id"] in {c.id for c in self.vocabulary if c.name in self.split["novel"]}]
        with open(os.path.join(self.root, "annotations", "scribbles_train.json")) as f:
            scribbles = json.load(f)
        self.assertEqual([(s["id"], s["image_id"], s["category_id"]) for s in scribbles["annotations"]],
                         [(a["id"], a["image_id"], a["category_id"]) for a in novel])
        for stroke, ann in zip(scribbles["annotations"], novel):
            mask = mask_util.decode(ann["segmentation"])
            vertices = np.array(stroke["scribble"])
            self.assertEqual(vertices.shape, (3, 2))
            for t in np.linspace(0, 1, 41):  # every point of the stroke lies on the object
                x, y = vertices[0] + t * (vertices[2] - vertices[0])
                self.assertEqual(mask[int(y), int(x)], 1, stroke)
            self.assertLessEqual(np.linalg.norm(vertices[2] - vertices[0]), 0.7 * np.sqrt(mask.sum()) + 1e-6)  # short

    def test_masks_are_visible_parts_and_match_box_and_area(self):
        by_image = {}
        for ann in self.val["annotations"]:
            mask = mask_util.decode(ann["segmentation"])
            self.assertEqual(int(mask.sum()), ann["area"])
            ys, xs = np.nonzero(mask)
            self.assertEqual(ann["bbox"], [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)])
            by_image.setdefault(ann["image_id"], []).append(mask)
        for masks in by_image.values():  # occlusion handled: no pixel belongs to two instances
            self.assertLessEqual(int(np.sum(masks, axis=0).max()), 1)
            self.assertTrue(1 <= len(masks) <= 5)

    def test_captions_like_people_write_them(self):
        images, captions = load_coco_captions(os.path.join(self.root, "annotations", "captions_train.json"))
        self.assertEqual(len(images), 60)
        self.assertTrue(all(1 <= len(captions[im["id"]]) <= 3 for im in images))
        texts = [t for ts in captions.values() for t in ts]
        synonyms = {s for c in self.vocabulary for s in c.synonyms}
        self.assertTrue(any(w in t.split() for t in texts for w in ("two", "three")))
        self.assertTrue(any(s in t for t in texts for s in synonyms))
        self.assertTrue(any(w in t for t in texts for w in ("red", "blue", "green")))
        # Captions name the classes present (never absent ones), and sometimes leave one out.
        matcher = CaptionMatcher(self.vocabulary)
        present = {}
        for ann in self.all["annotations"]:
            present.setdefault(ann["image_id"], set()).add(self.vocabulary.ids.index(ann["category_id"]))
        left_out = 0
        for image_id, texts in captions.items():
            for text in texts:
                named = set(matcher.classes_in([text]))
                self.assertLessEqual(named, present[image_id], text)
                left_out += named != present[image_id]
        self.assertGreater(left_out, 0)
