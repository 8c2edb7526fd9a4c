"""The pseudo-label index and the streaming JSON reader under it (no detectron2 needed)."""
import copy
import json
import os
import tempfile
import unittest

import numpy as np
import pycocotools.mask as mask_util

from xpseudo.pseudo.index_from_json import build_index_from_json
from xpseudo.pseudo.label_index import PseudoLabelIndex, index_path, is_fresh
from xpseudo.utils.io import InputError
from xpseudo.utils.json_stream import iter_json_object


def rle(height, width, rows, cols):
    mask = np.zeros((height, width), np.uint8, order="F")
    mask[rows, cols] = 1
    encoded = mask_util.encode(mask)
    return {"size": [height, width], "counts": encoded["counts"].decode()}, int(mask.sum())


def coco_file(num_images=5):
    """Images with ids in descending order, 0-2 annotations each; annotations of one image are not
    contiguous in the list (the file gives them interleaved)."""
    images = [{"id": 50 - 10 * k, "file_name": f"im{k}.png", "height": 6 + k, "width": 8} for k in range(num_images)]
    annotations = []
    for round_ in range(2):
        for k, image in enumerate(images):
            if (k + round_) % 3 == 0:
                continue
            segmentation, area = rle(image["height"], 8, slice(1, 3 + round_), slice(k, k + 2))
            annotations.append({"id": len(annotations) + 1, "image_id": image["id"], "category_id": 7 if k % 2 else 3,
                                "segmentation": segmentation, "bbox": [k, 1, 2, 2 + round_], "area": area, "iscrowd": 0,
                                "score": 0.5, "word": "café"})
    return {"info": {"note": "naïve ünïcode"}, "images": images, "annotations": annotations,
            "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]}


class TestJsonStream(unittest.TestCase):
    def test_elements_and_byte_spans_at_any_window_size(self):
        data = coco_file()
        with tempfile.TemporaryDirectory() as tmp:
            for indent in (None, 3):
                path = os.path.join(tmp, "f.json")
                with open(path, "w", encoding="utf-8") as f:
                    json.dump(data, f, indent=indent, ensure_ascii=False)
                raw = open(path, "rb").read()
                for chunk in (7, 64, 1 << 20):
                    items = list(iter_json_object(path, ("images", "annotations", "categories"), chunk=chunk))
                    self.assertEqual([i.value for i in items if i.key == "annotations"], data["annotations"])
                    self.assertEqual([i.index for i in items if i.key == "images"], list(range(len(data["images"]))))
                    self.assertEqual([i for i in items if i.key == "info"][0].value, data["info"])
                    for item in items:  # every span is the element's exact bytes
                        self.assertEqual(json.loads(raw[item.start:item.start + item.length].decode("utf-8")), item.value)

    def test_malformed_json_names_file_and_byte(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "bad.json")
            for text, byte in (('{"images": [{"id": 1}, {"id": 2]}', 31), ('{"images": [{"id": 1}} ', 21), ("[1, 2]", 0)):
                with open(path, "w") as f:
                    f.write(text)
                with self.assertRaisesRegex(InputError, rf"bad.json: malformed JSON at byte {byte}"):
                    list(iter_json_object(path, ("images",), chunk=5))


class TestIndexFromJson(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.path = os.path.join(self.tmp.name, "pl.json")
        self.data = coco_file()
        for image in self.data["images"]:
            open(os.path.join(self.tmp.name, image["file_name"]), "wb").close()

    def tearDown(self):
        self.tmp.cleanup()

    def write(self, data, **dump):
        with open(self.path, "w", encoding="utf-8") as f:
            json.dump(data, f, **dump)

    def test_entries_in_detectron2_order(self):
        self.write(self.data, indent=1, ensure_ascii=False)
        index = PseudoLabelIndex(build_index_from_json(self.path, image_root=self.tmp.name), self.path)
        self.assertEqual(index.images_checked_under, self.tmp.name)
        by_id = sorted(self.data["images"], key=lambda im: im["id"])  # load_coco_json's order
        self.assertEqual(index.image_ids().tolist(), [im["id"] for im in by_id])
        self.assertEqual([index.file_name_at(index.position(i)) for i in range(len(index))], [im["file_name"] for im in by_id])
        self.assertEqual(index.file_names().block(0, len(index)), [im["file_name"] for im in self.data["images"]])
        for i, image in enumerate(by_id):
            entry_image, annotations = index.entries(i)
            self.assertEqual(entry_image, image)
            self.assertEqual(annotations, [a for a in self.data["annotations"] if a["image_id"] == image["id"]])
        first, end = index.annotation_ranges()
        self.assertEqual([index.categories()[a:b].tolist() for a, b in zip(first, end)],
                         [[a["category_id"] for a in self.data["annotations"] if a["image_id"] == im["id"]] for im in by_id])

    def test_stale_when_the_file_changes(self):
        self.write(self.data)
        path = build_index_from_json(self.path)
        self.assertEqual(path, index_path(self.path))
        self.assertTrue(is_fresh(path, self.path))
        self.data["annotations"].pop()
        self.write(self.data)
        self.assertFalse(is_fresh(path, self.path))

    def test_bad_entries_name_the_file_and_item_and_keep_the_previous_index(self):
        self.write(self.data)
        path = build_index_from_json(self.path)
        previous = open(path, "rb").read()
        cases = [
            (lambda d: d["annotations"][2].update(category_id=99), r"pl.json: annotations\[2\] \(id 3\): category_id 99 is not among the categories"),
            (lambda d: d["annotations"][1]["segmentation"].update(counts="zzzz"), r"annotations\[1\] \(id 2\): (RLE counts do not decode|unreadable RLE)"),
            (lambda d: d["annotations"][0]["segmentation"].update(size=[9, 8]), r"annotations\[0\] \(id 1\): .*size \[7, 8\] of its image, got \[9, 8\]"),
            (lambda d: d["annotations"][3].update(image_id=12345), r"annotations\[3\] \(id 4\): image_id 12345 is not among the images"),
            (lambda d: d["annotations"][4].update(id=1), "annotation id 1 appears more than once"),
            (lambda d: d["annotations"][0].update(bbox=[1, 2]), r"annotations\[0\] \(id 1\): 'bbox' must be 4 finite numbers"),
            (lambda d: d["images"][2].pop("height"), r"images\[2\] \(id 30\): lacks 'height'"),
            (lambda d: d["images"][3].update(id=50), "image id 50 appears more than once"),
            (lambda d: d.pop("categories"), "not a COCO instances file: no 'categories' list"),
        ]
        for change, message in cases:
            data = copy.deepcopy(self.data)
            change(data)
            self.write(data)
            with self.subTest(message), self.assertRaisesRegex(InputError, message):
                build_index_from_json(self.path)
            self.assertEqual(open(path, "rb").read(), previous)
        self.write(self.data)
        os.remove(os.path.join(self.tmp.name, "im3.png"))
        with self.assertRaisesRegex(InputError, r"images\[3\] \(id 20\): image file .*im3.png does not exist"):
            build_index_from_json(self.path, image_root=self.tmp.name)
        self.assertEqual(sorted(n for n in os.listdir(self.tmp.name) if n.startswith(".")), [])  # no temporary left behind


if __name__ == "__main__":
    unittest.main()
