"""Dataset files (XPM.DATASET_FILES): checking and path resolution need no detectron2; registration does."""
import json
import os
import tempfile
import unittest

from tests.helpers import make_shapes, requires_detectron2
from xpseudo.data.dataset_files import absolute_dataset_file_opts, parse_file_list, read_dataset_file
from xpseudo.utils.io import InputError

ENTRY = """datasets:
  - name: mine_train_base
    kind: instances
    image_root: shapes/images/train
    json: shapes/annotations/instances_train_base.json
    split: shapes/split.json
    vocabulary: shapes/vocabulary.json
"""


class DatasetFileCase(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.root = self.tmp.name
        make_shapes(os.path.join(self.root, "shapes"), num_train=4, num_val=2, image_size=64)

    def tearDown(self):
        self.tmp.cleanup()

    def write(self, text, name="mine.yaml"):
        path = os.path.join(self.root, name)
        with open(path, "w") as f:
            f.write(text)
        return path


class TestReadDatasetFile(DatasetFileCase):
    def test_relative_paths_resolve_against_the_files_folder(self):
        path = self.write(ENTRY)
        cwd = os.getcwd()
        os.chdir(tempfile.gettempdir())  # not the file's folder
        try:
            (entry,) = read_dataset_file(path)
        finally:
            os.chdir(cwd)
        self.assertEqual(entry["name"], "mine_train_base")
        self.assertEqual(entry["image_root"], os.path.join(self.root, "shapes", "images", "train"))
        self.assertEqual(entry["json"], os.path.join(self.root, "shapes", "annotations", "instances_train_base.json"))

    def test_json_files_read_the_same(self):
        import yaml

        as_json = self.write(json.dumps(yaml.safe_load(ENTRY)), "mine.json")
        self.assertEqual(read_dataset_file(as_json), read_dataset_file(self.write(ENTRY)))

    def test_bad_entries_name_the_file_entry_and_field(self):
        cases = {
            ENTRY.replace("kind: instances", "kind: masks"): r"datasets\[0\] \('mine_train_base'\): 'kind' must be one of",
            ENTRY.replace("    split: shapes/split.json\n", ""): r"datasets\[0\] \('mine_train_base'\): kind 'instances' needs field\(s\) \['split'\]",
            ENTRY.replace("shapes/split.json", "shapes/nope.json"): r"datasets\[0\] \('mine_train_base'\): split .*nope.json does not exist",
            ENTRY + "    colour: red\n": r"unknown field\(s\) \['colour'\]",
            ENTRY + "    restrict_to: rare\n": r"'restrict_to' must be 'base' or 'novel', got 'rare'",
            ENTRY.replace("kind: instances", "kind: tags") + "    restrict_to: base\n": r"'restrict_to' applies to kind\(s\) \['instances'\], not 'tags'",
            ENTRY + ENTRY.replace("datasets:\n", ""): r"datasets\[1\] \('mine_train_base'\): the name 'mine_train_base' is declared twice",
            "datasets: []\n": "expected a top-level 'datasets' list",
            "datasets:\n  - name: [1\n": "malformed YAML at line",
        }
        for text, message in cases.items():
            path = self.write(text)
            with self.subTest(message=message), self.assertRaisesRegex(InputError, "^" + path + ": .*" + message):
                read_dataset_file(path)

    def test_an_image_folder_needs_no_labels(self):
        path = self.write("datasets:\n  - {name: photos, kind: images, image_root: shapes/images/val}\n")
        (entry,) = read_dataset_file(path)
        self.assertEqual(entry["kind"], "images")

    def test_overrides_carry_absolute_paths_to_other_processes(self):
        opts = absolute_dataset_file_opts(["SOLVER.MAX_ITER", "2", "XPM.DATASET_FILES", "('a.yaml', 'sub/b.json')"])
        self.assertEqual(opts[:3], ["SOLVER.MAX_ITER", "2", "XPM.DATASET_FILES"])
        self.assertEqual(parse_file_list(opts[3]), [os.path.abspath("a.yaml"), os.path.abspath("sub/b.json")])
        self.assertEqual(parse_file_list("a.yaml, b.yaml"), ["a.yaml", "b.yaml"])


@requires_detectron2
class TestRegisterDatasetFile(DatasetFileCase):
    def tearDown(self):
        from detectron2.data import DatasetCatalog, MetadataCatalog

        for name in [n for n in DatasetCatalog.list() if n.startswith("mine_")]:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        super().tearDown()

    def test_every_kind_registers_and_loads(self):
        from detectron2.data import DatasetCatalog, MetadataCatalog

        from xpseudo.data.dataset_files import register_dataset_files

        text = ENTRY + "".join(
            f"  - {{name: mine_{kind}, kind: {kind}, image_root: shapes/images/train, json: shapes/annotations/{file}, split: shapes/split.json}}\n"
            for kind, file in (("captions", "captions_train.json"), ("tags", "tags_train.json"), ("boxes", "boxes_train.json"),
                               ("points", "points_train.json")))
        text += "  - {name: mine_val_novel, kind: instances, image_root: shapes/images/val, json: shapes/annotations/instances_val.json, " \
                "split: shapes/split.json, restrict_to: novel}\n"
        text += "  - {name: mine_photos, kind: images, image_root: shapes/images/val}\n"
        path = self.write(text)
        registered = register_dataset_files([path])
        self.assertEqual(len(registered), 7)
        register_dataset_files([path])  # again: harmless
        base = DatasetCatalog.get("mine_train_base")
        self.assertEqual(len(base), 4)
        self.assertEqual(MetadataCatalog.get("mine_train_base").novel_classes, ["star", "cross", "crescent"])
        self.assertTrue(all("captions" in r for r in DatasetCatalog.get("mine_captions")))
        self.assertEqual(MetadataCatalog.get("mine_points").weak_labels, "points")
        self.assertEqual(MetadataCatalog.get("mine_val_novel").thing_classes, ["star", "cross", "crescent"])
        photos = DatasetCatalog.get("mine_photos")
        self.assertEqual([r["image_id"] for r in photos], [1, 2])
        self.assertEqual([os.path.basename(r["file_name"]) for r in photos], ["100001.png", "100002.png"])

    def test_a_name_registered_otherwise_is_an_error_naming_the_file(self):
        from xpseudo.data.dataset_files import register_dataset_files

        register_dataset_files([self.write(ENTRY)])
        other = self.write(ENTRY.replace("instances_train_base", "instances_train_all"), "other.yaml")
        with self.assertRaisesRegex(InputError, "^" + other + r": datasets\[0\] \('mine_train_base'\): dataset 'mine_train_base' is already registered"):
            register_dataset_files([other])

    def test_lvis_style_images_and_images_without_tags(self):
        """Detic's image-label files: images named by coco_url only, some images with no tags."""
        from detectron2.data import DatasetCatalog

        from xpseudo.data.dataset_files import register_dataset_files

        for name in ("tags_train.json", "instances_train_base.json"):
            path = os.path.join(self.root, "shapes", "annotations", name)
            with open(path) as f:
                data = json.load(f)
            for image in data["images"]:
                image["coco_url"] = "http://images.example.org/train/" + image.pop("file_name")
            data["images"][0].pop("pos_category_ids", None)
            with open(path, "w") as f:
                json.dump(data, f)
        text = ENTRY + "  - {name: mine_tags, kind: tags, image_root: shapes/images/train, json: shapes/annotations/tags_train.json, " \
                       "split: shapes/split.json}\n"
        register_dataset_files([self.write(text)])
        tags = DatasetCatalog.get("mine_tags")
        self.assertEqual(tags[0]["tags"], [])
        self.assertEqual(tags[0]["file_name"], os.path.join(self.root, "shapes", "images", "train", "000001.png"))
        self.assertTrue(all(os.path.isfile(r["file_name"]) for r in DatasetCatalog.get("mine_train_base")))


if __name__ == "__main__":
    unittest.main()
