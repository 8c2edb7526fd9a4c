import csv
import hashlib
import json
import os
import tempfile
import unittest

import cv2
import numpy as np
import pycocotools.mask as mask_util

from xpseudo.data.metadata_files import metadata_file
from xpseudo.data.split import OvisSplit

from tests.helpers import requires_detectron2, run_script

HEADER = ["MaskPath", "ImageID", "LabelName", "BoxID", "BoxXMin", "BoxXMax", "BoxYMin", "BoxYMax", "PredictedIoU", "Clicks"]


class TestOpenImagesSplitFiles(unittest.TestCase):
    def test_split_follows_the_documented_rule(self):
        # datasets/README.md: novel = the first 100 classes by SHA-1 of their MID, the person
        # classes excepted; every other of the 300 classes is base.
        with open(metadata_file("openimages_ovis_vocabulary.json")) as f:
            vocabulary = json.load(f)
        split = OvisSplit.from_file(metadata_file("openimages_ovis_split.json"))
        self.assertEqual(len(vocabulary), 300)
        self.assertEqual(len({c["mid"] for c in vocabulary}), 300)
        people = {"Person", "Man", "Woman", "Boy", "Girl"}
        ranked = sorted((c for c in vocabulary if c["name"] not in people), key=lambda c: hashlib.sha1(c["mid"].encode()).hexdigest())
        self.assertEqual(set(split.novel), {c["name"] for c in ranked[:100]})
        self.assertEqual(sorted(split.base + split.novel), sorted(c["name"] for c in vocabulary))


class TestPrepareOpenImages(unittest.TestCase):
    """A few-row masks CSV in the release's format: masks stored at half the image resolution, one
    missing, one unreadable, one empty, one image missing, one class outside the vocabulary."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.root = os.path.join(self.tmp.name, "openimages")
        for sub in ("annotations", "masks/train", "train"):
            os.makedirs(os.path.join(self.root, sub))
        with open(metadata_file("openimages_ovis_vocabulary.json")) as f:
            self.vocabulary = {c["name"]: c for c in json.load(f)}
        with open(os.path.join(self.root, "annotations", "challenge-2019-classes-description-segmentable.csv"), "w", newline="") as f:
            csv.writer(f).writerows([(c["mid"], c["name"]) for c in self.vocabulary.values()] + [("/m/0unicorn", "Unicorn")])
        person, car = self.vocabulary["Person"]["mid"], self.vocabulary["Car"]["mid"]  # base, novel
        self.small_person = np.zeros((15, 20), np.uint8)
        self.small_person[2:9, 3:7] = 255
        self.small_car = np.zeros((15, 20), np.uint8)
        self.small_car[10:14, 10:19] = 255
        self.write_mask("aaaa_person.png", self.small_person)
        self.write_mask("aaaa_car.png", self.small_car)
        self.write_mask("aaaa_empty.png", np.zeros((15, 20), np.uint8))
        self.write_mask("aaaa_unicorn.png", self.small_car)
        with open(os.path.join(self.root, "masks", "train", "bbbb_broken.png"), "wb") as f:
            f.write(b"not a png")
        self.write_mask("cccc_person.png", self.small_person)
        for image_id in ("aaaa", "bbbb"):
            cv2.imwrite(os.path.join(self.root, "train", image_id + ".jpg"), np.zeros((30, 40, 3), np.uint8))
        rows = [
            ("aaaa_person.png", "aaaa", person, "00000001"),
            ("aaaa_car.png", "aaaa", car, "00000002"),
            ("aaaa_empty.png", "aaaa", person, "00000003"),
            ("aaaa_unicorn.png", "aaaa", "/m/0unicorn", "00000004"),
            ("bbbb_missing.png", "bbbb", person, "00000005"),
            ("bbbb_broken.png", "bbbb", person, "00000006"),
            ("cccc_person.png", "cccc", person, "00000007"),  # cccc.jpg was never downloaded
        ]
        with open(os.path.join(self.root, "annotations", "challenge-2019-train-segmentation-masks.csv"), "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(HEADER)
            writer.writerows([row + ("0.1", "0.9", "0.1", "0.9", "0.8", "") for row in rows])

    def tearDown(self):
        self.tmp.cleanup()

    def write_mask(self, name, mask):
        cv2.imwrite(os.path.join(self.root, "masks", "train", name), mask)

    def expected_annotation(self, small, annotation_id, category):
        full = np.kron(small > 0, np.ones((2, 2), bool)).astype(np.uint8)  # nearest-neighbour x2
        rle = mask_util.encode(np.asfortranarray(full))
        return {
            "id": annotation_id, "image_id": 1, "iscrowd": 0,
            "segmentation": {"size": [30, 40], "counts": rle["counts"].decode()},
            "area": int(full.sum()), "bbox": [float(v) for v in mask_util.toBbox(rle)],
            "category_id": self.vocabulary[category]["id"], "oi_box_id": f"0000000{annotation_id}",
        }

    def convert(self, *args):
        return run_script("datasets/prepare_openimages.py", "--root", self.root, "--workers", "2", *args)

    def test_base_annotations(self):
        result = self.convert()
        self.assertIn("1 images, 1 masks (base classes) from 7 rows", result.stdout)
        self.assertIn("skipped: 2 other classes, 1 missing images, 0 unreadable images, 1 masks of unusable images, "
                      "1 missing masks, 1 unreadable masks, 1 empty masks", result.stdout)
        with open(os.path.join(self.root, "annotations", "ovis", "instances_train_base.json")) as f:
            data = json.load(f)
        self.assertEqual(data["images"], [{"id": 1, "file_name": "aaaa.jpg", "height": 30, "width": 40, "oi_image_id": "aaaa"}])
        self.assertEqual(data["annotations"], [self.expected_annotation(self.small_person, 1, "Person")])
        self.assertEqual(data["annotations"][0]["bbox"], [6.0, 4.0, 8.0, 14.0])
        self.assertEqual([c["name"] for c in data["categories"]], sorted(self.vocabulary, key=str.lower))

    def test_all_split_classes(self):
        self.convert("--annotations", "all")
        with open(os.path.join(self.root, "annotations", "ovis", "instances_train_all.json")) as f:
            data = json.load(f)
        car = self.expected_annotation(self.small_car, 2, "Car")
        self.assertEqual(data["annotations"], [self.expected_annotation(self.small_person, 1, "Person"), car])
        self.assertEqual(data["info"]["counts"]["other_classes"], 1)

    @requires_detectron2
    def test_registered_datasets_read_the_converted_files(self):
        from detectron2.data import DatasetCatalog, MetadataCatalog

        from xpseudo.data.builtin import register_all_builtin

        self.convert()
        os.rename(os.path.join(self.root, "annotations", "ovis", "instances_train_base.json"),
                  os.path.join(self.root, "annotations", "ovis", "instances_validation_all.json"))
        self.convert()
        try:
            register_all_builtin(self.tmp.name)
            for name, folder in (("openimages_ovis_train_base", "train"), ("openimages_ovis_val", "validation")):
                (record,) = DatasetCatalog.get(name)
                self.assertEqual(record["file_name"], os.path.join(self.root, folder, "aaaa.jpg"))
                self.assertEqual([a["category_id"] for a in record["annotations"]],
                                 [MetadataCatalog.get(name).thing_classes.index("Person")])
            self.assertEqual(DatasetCatalog.get("openimages_ovis_val_novel")[0]["annotations"], [])
        finally:
            register_all_builtin()

    def test_renamed_class_is_an_error_naming_the_file(self):
        path = os.path.join(self.root, "annotations", "challenge-2019-classes-description-segmentable.csv")
        with open(path) as f:
            text = f.read().replace(",Car\n", ",Automobile\n")
        with open(path, "w") as f:
            f.write(text)
        result = run_script("datasets/prepare_openimages.py", "--root", self.root, check=False)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(f"{path}: class {self.vocabulary['Car']['mid']} is named 'Automobile' here but 'Car' in", result.stderr)

    def test_missing_column_is_an_error_naming_the_file(self):
        path = os.path.join(self.root, "annotations", "challenge-2019-train-segmentation-masks.csv")
        with open(path, "w") as f:
            f.write("ImageID,LabelName\naaaa,/m/01g317\n")
        result = run_script("datasets/prepare_openimages.py", "--root", self.root, check=False)
        self.assertIn(f"{path}: missing column(s) ['MaskPath', 'BoxID']", result.stderr)


if __name__ == "__main__":
    unittest.main()
