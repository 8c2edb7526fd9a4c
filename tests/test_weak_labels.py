"""Weak-label file checks (no detectron2): what passes, and each error naming the file and entry."""
import json
import os
import tempfile
import unittest

from xpseudo.data.weak_labels import check_weak_label_file, weak_label_records
from xpseudo.utils.io import InputError


IMAGES = [{"id": 1, "file_name": "1.png", "height": 20, "width": 30}, {"id": 2, "file_name": "2.png", "height": 20, "width": 30}]


def boxes_file(**changes):
    data = {
        "images": [dict(im) for im in IMAGES],
        "annotations": [{"id": 7, "image_id": 1, "category_id": 3, "bbox": [0, 0, 30, 20]},
                        {"id": 8, "image_id": 2, "category_id": 4, "bbox": [10.5, 2.0, 20.4, 18.6]}],  # overhangs by 0.9 / 0.6: rounding
    }
    return changed(data, changes)


def tags_file(**changes):
    # Detic's image labels: pos_category_ids on the images, no annotations
    data = {"images": [dict(IMAGES[0], pos_category_ids=[3, 4, 3]), dict(IMAGES[1], pos_category_ids=[])]}
    return changed(data, changes)


def points_file(**changes):
    # PointSup's fields: pixel indices of the clicks, 1 inside the object
    data = {
        "images": [dict(im) for im in IMAGES],
        "annotations": [{"id": 7, "image_id": 1, "category_id": 3, "point_coords": [[29, 19]], "point_labels": [1]},
                        {"id": 8, "image_id": 1, "category_id": 4, "point_coords": [[0, 0], [5.5, 7]], "point_labels": [0, 1]}],
    }
    return changed(data, changes)


def changed(data, changes):
    for key, value in changes.items():
        kind, index, field = key.split("__")
        data[kind][int(index)][field] = value
    return data


def check(data, kind="boxes"):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"{kind}.json")
        with open(path, "w") as f:
            json.dump(data, f)
        try:
            return check_weak_label_file(path, kind, [3, 4])
        except InputError as e:
            raise InputError(f"{kind}.json", e.problem) from None


class TestWeakLabelFile(unittest.TestCase):
    def check(self, data, kind="boxes"):
        return check(data, kind)

    def assert_problems(self, kind, make, cases):
        for changes, message in cases:
            with self.assertRaises(InputError, msg=message) as caught:
                self.check(make(**changes), kind)
            self.assertEqual(str(caught.exception), f"{kind}.json: " + message)

    def test_good_file_passes(self):
        self.assertEqual(len(self.check(boxes_file())["annotations"]), 2)

    def test_each_problem_names_the_entry(self):
        cases = [
            (dict(annotations__1__bbox=[10.5, 2.0, 21.0, 18.6]), "annotations[1] (id 8): bbox [10.5, 2.0, 21.0, 18.6] leaves the 30x20 image 2"),
            (dict(annotations__0__bbox=[0, 0, 0, 5]), "annotations[0] (id 7): bbox [0, 0, 0, 5] is empty"),
            (dict(annotations__0__bbox=[0, 0, 5]), "annotations[0] (id 7): bbox must be [x, y, width, height] of finite numbers, got [0, 0, 5]"),
            (dict(annotations__0__category_id=9), "annotations[0] (id 7): category_id 9 is not a class of the dataset"),
            (dict(annotations__1__image_id=5), "annotations[1] (id 8): image_id 5 is not among the images"),
            (dict(images__1__id=1), "images[1]: image id 1 is listed twice"),
        ]
        self.assert_problems("boxes", boxes_file, cases)

    def test_tags(self):
        self.assertEqual(self.check(tags_file(), "tags")["images"][0]["pos_category_ids"], [3, 4, 3])
        self.assert_problems("tags", tags_file, [
            (dict(images__0__pos_category_ids=[3, 9]), "images[0] (id 1): pos_category_ids [9] are not classes of the dataset"),
            (dict(images__1__pos_category_ids=None), "images[1] (id 2): pos_category_ids must be a list of category ids, got None"),
            (dict(images__1__id=1), "images[1]: image id 1 is listed twice"),
        ])

    def test_points(self):
        self.assertEqual(len(self.check(points_file(), "points")["annotations"]), 2)
        self.assert_problems("points", points_file, [
            (dict(annotations__0__point_coords=[[31.5, 3]]), "annotations[0] (id 7): point [31.5, 3] lies outside the 30x20 image 1"),
            (dict(annotations__1__point_labels=[1]), "annotations[1] (id 8): point_labels must be one 0 or 1 per point (2), got [1]"),
            (dict(annotations__0__point_coords=[[1, 2, 3]]), "annotations[0] (id 7): point_coords must be a list of [x, y] of finite numbers, got [[1, 2, 3]]"),
            (dict(annotations__0__category_id=5), "annotations[0] (id 7): category_id 5 is not a class of the dataset"),
            (dict(annotations__1__image_id=3), "annotations[1] (id 8): image_id 3 is not among the images"),
        ])
        with self.assertRaisesRegex(InputError, r"points.json: annotations\[0\] \(id 7\) lacks \['point_labels'\]"):
            data = points_file()
            del data["annotations"][0]["point_labels"]
            self.check(data, "points")

    def test_unknown_kind(self):
        with self.assertRaisesRegex(ValueError, "unknown weak-label kind 'strokes'"):
            check_weak_label_file("x.json", "strokes", [])


class TestWeakLabelRecords(unittest.TestCase):
    ID_MAP = {3: 0, 4: 1}

    def test_tags_become_contiguous_ids_once_each(self):
        records = weak_label_records(tags_file(), "tags", "root", self.ID_MAP)
        self.assertEqual([(r["image_id"], r["file_name"], r["tags"]) for r in records], [(1, os.path.join("root", "1.png"), [0, 1]), (2, os.path.join("root", "2.png"), [])])

    def test_points_and_boxes_go_to_their_images(self):
        records = weak_label_records(points_file(), "points", "", self.ID_MAP)
        self.assertEqual(records[0]["annotations"], [{"category_id": 0, "point_coords": [[29, 19]], "point_labels": [1]},
                                                     {"category_id": 1, "point_coords": [[0, 0], [5.5, 7]], "point_labels": [0, 1]}])
        self.assertEqual(records[1]["annotations"], [])
        boxes = weak_label_records(boxes_file(), "boxes", "", self.ID_MAP)
        self.assertEqual([r["annotations"] for r in boxes], [[{"category_id": 0, "bbox": [0, 0, 30, 20]}],
                                                              [{"category_id": 1, "bbox": [10.5, 2.0, 20.4, 18.6]}]])


if __name__ == "__main__":
    unittest.main()
