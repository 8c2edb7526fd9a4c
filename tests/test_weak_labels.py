"""Weak-label file checks (no detectron2): what passes, and each error naming the file and entry."""
import json
import os
import tempfile
import unittest

from xpseudo.data.weak_labels import check_weak_label_file
from xpseudo.utils.io import InputError


def boxes_file(**changes):
    data = {
        "images": [{"id": 1, "file_name": "1.png", "height": 20, "width": 30}, {"id": 2, "file_name": "2.png", "height": 20, "width": 30}],
        "annotations": [{"id": 7, "image_id": 1, "category_id": 3, "bbox": [0, 0, 30, 20]},
                        {"id": 8, "image_id": 2, "category_id": 4, "bbox": [10.5, 2.0, 20.4, 18.6]}],  # overhangs by 0.9 / 0.6: rounding
    }
    for key, value in changes.items():
        kind, index, field = key.split("__")
        data[kind][int(index)][field] = value
    return data


class TestWeakLabelFile(unittest.TestCase):
    def check(self, data):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "boxes.json")
            with open(path, "w") as f:
                json.dump(data, f)
            try:
                return check_weak_label_file(path, "boxes", [3, 4])
            except InputError as e:
                raise InputError("boxes.json", e.problem) from None

    def test_good_file_passes(self):
        self.assertEqual(len(self.check(boxes_file())["annotations"]), 2)

    def test_each_problem_names_the_entry(self):
        cases = [
            (dict(annotations__1__bbox=[10.5, 2.0, 21.0, 18.6]), "annotations[1] (id 8): bbox [10.5, 2.0, 21.0, 18.6] leaves the 30x20 image 2"),
            (dict(annotations__0__bbox=[0, 0, 0, 5]), "annotations[0] (id 7): bbox [0, 0, 0, 5] is empty"),
            (dict(annotations__0__bbox=[0, 0, 5]), "annotations[0] (id 7): bbox must be [x, y, width, height], got [0, 0, 5]"),
            (dict(annotations__0__category_id=9), "annotations[0] (id 7): category_id 9 is not a class of the dataset"),
            (dict(annotations__1__image_id=5), "annotations[1] (id 8): image_id 5 is not among the images"),
            (dict(images__1__id=1), "images[1]: image id 1 is listed twice"),
        ]
        for changes, message in cases:
            with self.assertRaises(InputError, msg=message) as caught:
                self.check(boxes_file(**changes))
            self.assertEqual(str(caught.exception), "boxes.json: " + message)


if __name__ == "__main__":
    unittest.main()
