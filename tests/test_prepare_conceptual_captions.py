import json
import os
import tempfile
import unittest

import numpy as np
from PIL import Image

from tests.helpers import requires_detectron2, run_script


class TestPrepareConceptualCaptions(unittest.TestCase):
    """A CC TSV whose folder (img2dataset layout) holds one valid image, one rotated by EXIF, one
    corrupt file, and nothing for the remaining row."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.root = os.path.join(self.tmp.name, "cc")
        self.images = os.path.join(self.root, "images", "train", "00000")
        os.makedirs(self.images)
        rows = [
            ("a dog runs on the beach", "http://example.com/a.jpg"),
            ("actor arrives at the premiere", "http://example.com/b.jpg"),
            ("a corrupt picture of a cat", "http://example.com/c.jpg"),
            ("a bus that was never downloaded", "http://example.com/d.jpg"),
        ]
        with open(os.path.join(self.root, "Train_GCC-training.tsv"), "w") as f:
            f.writelines(f"{caption}\t{url}\n" for caption, url in rows)
        Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(os.path.join(self.images, "000000000.jpg"))
        exif = Image.Exif()
        exif[0x0112] = 6  # orientation: rotate 90 degrees, so detectron2 reads it as 40 x 30
        Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(os.path.join(self.images, "000000001.jpg"), exif=exif)
        with open(os.path.join(self.images, "000000000.jpg"), "rb") as f:
            truncated = f.read()[:200]
        with open(os.path.join(self.images, "000000002.jpg"), "wb") as f:
            f.write(truncated)

    def tearDown(self):
        self.tmp.cleanup()

    def test_converted_files(self):
        result = run_script("datasets/prepare_conceptual_captions.py", "--root", self.root, "--workers", "2")
        self.assertIn("2 of 4 rows written; 1 images missing, 1 corrupt, 0 empty captions", result.stdout)
        with open(os.path.join(self.root, "annotations", "captions_train.json")) as f:
            data = json.load(f)
        self.assertEqual(data["images"], [
            {"id": 1, "file_name": "00000/000000000.jpg", "height": 30, "width": 40, "url": "http://example.com/a.jpg"},
            {"id": 2, "file_name": "00000/000000001.jpg", "height": 40, "width": 30, "url": "http://example.com/b.jpg"},
        ])
        self.assertEqual(data["annotations"], [
            {"id": 1, "image_id": 1, "caption": "a dog runs on the beach"},
            {"id": 2, "image_id": 2, "caption": "actor arrives at the premiere"},
        ])
        self.assertEqual(data["info"]["counts"], {"rows": 4, "empty_caption": 0, "missing": 1, "corrupt": 1, "images": 2})
        with open(os.path.join(self.root, "annotations", "images_train.txt")) as f:
            self.assertEqual(f.read(), "00000/000000000.jpg\n00000/000000001.jpg\n")

    @requires_detectron2
    def test_registered_as_caption_only_dataset(self):
        from detectron2.data import DatasetCatalog

        from xpseudo.data.builtin import register_all_builtin

        run_script("datasets/prepare_conceptual_captions.py", "--root", self.root, "--workers", "0")
        from xpseudo.modeling.vocabulary import dataset_caption_matcher

        try:
            register_all_builtin(self.tmp.name)
            records = DatasetCatalog.get("cc_captions_train")
            matcher = dataset_caption_matcher("cc_captions_train")  # the Open Images vocabulary
            self.assertEqual([[matcher.vocabulary[c].name for c in matcher.classes_in(r["captions"])] for r in records],
                             [["Dog"], ["Person"]])
        finally:
            register_all_builtin()
        self.assertEqual([(r["file_name"], r["captions"], "annotations" in r) for r in records], [
            (os.path.join(self.images, "000000000.jpg"), ["a dog runs on the beach"], False),
            (os.path.join(self.images, "000000001.jpg"), ["actor arrives at the premiere"], False),
        ])

    def test_other_naming_and_sequential(self):
        flat = os.path.join(self.tmp.name, "flat")
        os.makedirs(flat)
        os.rename(os.path.join(self.images, "000000001.jpg"), os.path.join(flat, "1.jpg"))
        output = os.path.join(self.tmp.name, "out")
        run_script("datasets/prepare_conceptual_captions.py", "--root", self.root, "--images", flat,
                   "--naming", "index", "--workers", "0", "--output", output)
        with open(os.path.join(output, "captions_train.json")) as f:
            data = json.load(f)
        self.assertEqual([(im["id"], im["file_name"]) for im in data["images"]], [(2, "1.jpg")])

    def test_malformed_line_names_file_and_line_and_keeps_previous_output(self):
        run_script("datasets/prepare_conceptual_captions.py", "--root", self.root, "--workers", "0")
        captions = os.path.join(self.root, "annotations", "captions_train.json")
        with open(captions) as f:
            before = f.read()
        tsv = os.path.join(self.root, "Train_GCC-training.tsv")
        with open(tsv, "a") as f:
            f.write("no url on this line\n")
        result = run_script("datasets/prepare_conceptual_captions.py", "--root", self.root, "--workers", "0", check=False)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(f"{tsv}: line 5: expected 'caption<TAB>url', found 1 tab-separated fields", result.stderr)
        with open(captions) as f:
            self.assertEqual(f.read(), before)

    def test_header_line_does_not_shift_rows(self):
        tsv = os.path.join(self.root, "Train_GCC-training.tsv")
        with open(tsv) as f:
            rows = f.read()
        with open(tsv, "w") as f:
            f.write("caption\turl\n" + rows)
        run_script("datasets/prepare_conceptual_captions.py", "--root", self.root, "--workers", "0")
        with open(os.path.join(self.root, "annotations", "captions_train.json")) as f:
            data = json.load(f)
        self.assertEqual([(a["image_id"], a["caption"]) for a in data["annotations"]],
                         [(1, "a dog runs on the beach"), (2, "actor arrives at the premiere")])

    def test_no_image_at_all_writes_nothing(self):
        result = run_script("datasets/prepare_conceptual_captions.py", "--root", self.root, "--images", self.tmp.name,
                            "--workers", "0", check=False)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("nothing written", result.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.root, "annotations")))


if __name__ == "__main__":
    unittest.main()
