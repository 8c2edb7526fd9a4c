import json
import os
import tempfile
import unittest

from tests.helpers import HAS_DETECTRON2, make_shapes, requires_detectron2

if HAS_DETECTRON2:
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from xpseudo.data import register_ovis_dataset
    from xpseudo.data.builtin import register_all_builtin
    from xpseudo.text import Vocabulary
    from xpseudo.utils.io import InputError


@requires_detectron2
class TestBuiltinDatasets(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        make_shapes(os.path.join(cls.tmp.name, "shapes"), num_train=30, num_val=10)
        register_all_builtin(cls.tmp.name)

    @classmethod
    def tearDownClass(cls):
        register_all_builtin()  # back to $DETECTRON2_DATASETS for other tests
        cls.tmp.cleanup()

    def test_all_names_registered(self):
        for family in ("shapes", "coco_ovis"):
            for name in ("train_base", "train_captions", "val", "val_base", "val_novel"):
                self.assertIn(f"{family}_{name}", DatasetCatalog.list())
        coco = MetadataCatalog.get("coco_ovis_val")
        self.assertEqual((len(coco.thing_classes), len(coco.base_class_ids), len(coco.novel_class_ids)), (65, 48, 17))
        self.assertEqual(coco.evaluator_type, "ovis")

    def test_coco_captions_match_all_80_classes_and_keep_the_split(self):
        from xpseudo.modeling.vocabulary import dataset_caption_matcher

        matcher = dataset_caption_matcher("coco_ovis_train_captions")
        self.assertEqual(len(Vocabulary.from_file(MetadataCatalog.get("coco_ovis_train_captions").caption_vocabulary_file)), 80)
        names = matcher.vocabulary.names
        found = [names[m.class_index] for m in matcher.find("A hot dog and a teddy bear next to a dog and a bear on a couch.")]
        self.assertEqual(found, ["dog", "bear", "couch"])

    def test_generalized_and_constrained_metadata(self):
        meta = MetadataCatalog.get("shapes_val")
        self.assertEqual(meta.thing_classes, ["circle", "square", "triangle", "hexagon", "ring", "star", "cross", "crescent"])
        self.assertEqual((meta.base_class_ids, meta.novel_class_ids), ([0, 1, 2, 3, 4], [5, 6, 7]))
        self.assertEqual(meta.json_file, os.path.join(self.tmp.name, "shapes/annotations/instances_val.json"))
        novel = MetadataCatalog.get("shapes_val_novel")
        self.assertEqual((novel.thing_classes, novel.novel_class_ids, novel.base_class_ids), (["star", "cross", "crescent"], [0, 1, 2], []))
        self.assertEqual(novel.thing_dataset_id_to_contiguous_id, {6: 0, 7: 1, 8: 2})

    def test_dataset_dicts(self):
        generalized = DatasetCatalog.get("shapes_val")
        constrained = DatasetCatalog.get("shapes_val_novel")
        self.assertEqual(len(generalized), 10)
        self.assertEqual([r["image_id"] for r in constrained], [r["image_id"] for r in generalized])
        full = [a["category_id"] for r in generalized for a in r["annotations"]]
        kept = [a["category_id"] for r in constrained for a in r["annotations"]]
        self.assertEqual(kept, [c - 5 for c in full if c >= 5])
        base = DatasetCatalog.get("shapes_train_base")
        self.assertTrue(all(a["category_id"] < 5 for r in base for a in r["annotations"]))
        captions = DatasetCatalog.get("shapes_train_captions")
        self.assertEqual(len(captions), 30)
        self.assertTrue(all(r["captions"] and "annotations" not in r for r in captions))
        self.assertTrue(captions[0]["file_name"].endswith("shapes/images/train/000001.png"))


@requires_detectron2
class TestRegisterOvisDataset(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        make_shapes(self.tmp.name, num_train=12, num_val=4)
        self.ann = os.path.join(self.tmp.name, "annotations")
        self.kwargs = dict(
            image_root=os.path.join(self.tmp.name, "images", "train"),
            split_file=os.path.join(self.tmp.name, "split.json"),
            instances_json=os.path.join(self.ann, "instances_train_all.json"),
            captions_json=os.path.join(self.ann, "captions_train.json"),
        )
        self.names = []

    def tearDown(self):
        for name in self.names:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        self.tmp.cleanup()

    def register(self, name, **overrides):
        metadata = register_ovis_dataset(name, **{**self.kwargs, **overrides})
        if name not in self.names:
            self.names.append(name)
        return metadata

    def test_instances_with_captions_and_registering_twice(self):
        first = self.register("_test_ovis_custom")
        self.assertIs(self.register("_test_ovis_custom"), first)  # same arguments: harmless
        records = DatasetCatalog.get("_test_ovis_custom")
        self.assertEqual(len(records), 12)
        self.assertTrue(all(r["captions"] for r in records))
        self.assertEqual(first.thing_classes[5:], ["star", "cross", "crescent"])
        self.assertEqual(first.captions_file, self.kwargs["captions_json"])
        with self.assertRaisesRegex(ValueError, r"already registered with other \['image_root'\]"):
            self.register("_test_ovis_custom", image_root="/elsewhere")
        self.assertEqual(self.register("_test_ovis_custom", image_root="/elsewhere", replace=True).image_root, "/elsewhere")

    def test_split_class_not_in_dataset(self):
        split = os.path.join(self.tmp.name, "bad_split.json")
        with open(split, "w") as f:
            json.dump({"base": ["circle"], "novel": ["unicorn"]}, f)
        with self.assertRaises(InputError) as e:
            self.register("_test_ovis_bad", split_file=split)
        self.assertIn("bad_split.json: novel category 'unicorn' is not a category of", str(e.exception))
        self.assertNotIn("_test_ovis_bad", DatasetCatalog.list())

    def test_caption_only_dataset_skips_empty_captions_and_refuses_none(self):
        path = os.path.join(self.tmp.name, "caps.json")
        with open(path, "w") as f:
            json.dump({"images": [{"id": 1, "file_name": "000001.png"}, {"id": 2, "file_name": "000002.png"}],
                       "annotations": [{"image_id": 1, "caption": "a star"}, {"image_id": 2, "caption": "  "}]}, f)
        self.register("_test_ovis_caps", instances_json=None, captions_json=path)
        self.assertEqual([(r["image_id"], r["captions"]) for r in DatasetCatalog.get("_test_ovis_caps")], [(1, ["a star"])])
        with open(path, "w") as f:
            json.dump({"images": [{"id": 1, "file_name": "000001.png"}], "annotations": [{"image_id": 1, "caption": ""}]}, f)
        self.register("_test_ovis_empty", instances_json=None, captions_json=path)
        with self.assertRaisesRegex(InputError, "caps.json: no image has a non-empty caption"):
            DatasetCatalog.get("_test_ovis_empty")
