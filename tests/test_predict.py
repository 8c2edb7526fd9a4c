"""tools/predict.py: a folder of images labeled into a COCO file with a chosen vocabulary."""
import filecmp
import json
import math
import os
import shutil
import tempfile
import unittest

from tests.helpers import REPO, make_shapes, requires_detectron2, run_script, write_shape_embeddings

TEACHER = "configs/shapes/xpm_teacher_R18_FPN.yaml"
STUDENT = "configs/shapes/xpm_student_R18_FPN.yaml"


def random_teacher(path, opts):
    """A random-init shapes teacher's weights (seeded): its detections are many and reproducible."""
    import torch
    from detectron2.modeling import build_model

    import xpseudo.data.builtin  # noqa: F401  the shapes config's training classes
    import xpseudo.modeling  # noqa: F401
    from xpseudo.config import load_config

    torch.manual_seed(0)
    model = build_model(load_config(os.path.join(REPO, TEACHER), opts))
    torch.save({"model": model.state_dict()}, path)
    return path


@requires_detectron2
class TestPredict(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        root = cls.tmp.name
        make_shapes(os.path.join(root, "data"), num_train=4, num_val=6, image_size=96)
        cls.val = os.path.join(root, "data", "images", "val")
        cls.vocabulary = os.path.join(root, "data", "vocabulary.json")
        emb = write_shape_embeddings(os.path.join(root, "emb.npy"))
        cls.opts = ["MODEL.XPM.TEXT_EMBEDDINGS", emb, "MODEL.XPM.EMBEDDING_DIM", "32", "DATALOADER.NUM_WORKERS", "0"]
        cls.weights = random_teacher(os.path.join(root, "teacher.pth"), cls.opts)
        cls.env = {"DETECTRON2_DATASETS": os.path.join(root, "none")}  # nothing builtin is needed
        cls.reference = os.path.join(root, "one", "val.json")
        cls.predict(cls.val, cls.reference, "--keep-empty-masks")

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    @classmethod
    def predict(cls, source, output, *extra, config=TEACHER, check=True, vocabulary=None):
        return run_script("tools/predict.py", "--config-file", config, "--input", source, "--vocabulary", vocabulary or cls.vocabulary,
                          "--output", output, *extra, *cls.opts, "MODEL.WEIGHTS", cls.weights, env=cls.env, check=check)

    def load(self, path):
        from pycocotools.coco import COCO

        coco = COCO(path)
        return coco.dataset, coco

    def test_the_file_is_coco_instances_of_every_image_with_the_vocabulary(self):
        data, coco = self.load(self.reference)
        self.assertEqual([im["file_name"] for im in data["images"]], [f"10000{i}.png" for i in range(1, 7)])
        self.assertEqual([im["id"] for im in data["images"]], list(range(1, 7)))
        self.assertTrue(all(im["height"] == im["width"] == 96 for im in data["images"]))
        with open(self.vocabulary) as f:
            self.assertEqual(data["categories"], [{"id": c["id"], "name": c["name"]} for c in json.load(f)])
        self.assertGreater(len(data["annotations"]), 6)
        self.assertEqual([a["id"] for a in data["annotations"]], list(range(1, len(data["annotations"]) + 1)))
        for ann in data["annotations"]:
            self.assertEqual(ann["segmentation"]["size"], [96, 96])
            self.assertEqual(ann["area"], int(coco.annToMask(ann).sum()))
            self.assertGreaterEqual(ann["score"], 0.05)  # the config's SCORE_THRESH_TEST
        with open(os.path.join(os.path.dirname(self.reference), "val.provenance.json")) as f:
            provenance = json.load(f)
        self.assertEqual(provenance["counts"]["images"], 6)
        self.assertEqual(provenance["unreadable_images"], [])

    def test_evaluation_matches_train_net_eval_only(self):
        """The predictions are exactly what --eval-only scores, and evaluate_ovis.py gives its AP. The
        ground truth is made from the model's own best detections so that AP is far from 0."""
        root = tempfile.mkdtemp(dir=self.tmp.name)
        data, _ = self.load(self.reference)
        ids = {im["id"]: 100000 + int(im["file_name"][:6]) % 100000 for im in data["images"]}
        best = {}
        for ann in data["annotations"]:
            if ann["area"] > 0 and ann["score"] > best.get(ann["image_id"], {}).get("score", -1):
                best[ann["image_id"]] = ann
        gt = {"images": [dict(im, id=ids[im["id"]]) for im in data["images"]], "categories": data["categories"],
              "annotations": [{"id": i + 1, "image_id": ids[a["image_id"]], "category_id": a["category_id"], "segmentation": a["segmentation"],
                               "bbox": a["bbox"], "area": a["area"], "iscrowd": 0} for i, a in enumerate(best.values())]}
        with open(os.path.join(root, "gt.json"), "w") as f:
            json.dump(gt, f)
        with open(os.path.join(root, "datasets.yaml"), "w") as f:
            f.write(f"datasets:\n  - {{name: mine_gt, kind: instances, image_root: {self.val}, json: gt.json, "
                    f"split: {os.path.join(self.tmp.name, 'data', 'split.json')}, vocabulary: {self.vocabulary}}}\n")
        out = os.path.join(root, "eval")
        run_script("tools/train_net.py", "--config-file", TEACHER, "--eval-only", *self.opts, "MODEL.WEIGHTS", self.weights,
                   "XPM.DATASET_FILES", f"('{os.path.join(root, 'datasets.yaml')}',)", "DATASETS.TEST", "('mine_gt',)", "OUTPUT_DIR", out,
                   env=self.env)
        with open(os.path.join(out, "inference", "mine_gt", "coco_instances_results.json")) as f:
            evaluated = json.load(f)

        def key(d, image_id):
            return (image_id, d["category_id"], d["score"], d["segmentation"]["counts"], tuple(round(v, 3) for v in d["bbox"]))

        self.assertEqual(sorted(key(d, d["image_id"]) for d in evaluated), sorted(key(d, ids[d["image_id"]]) for d in data["annotations"]))
        with open(os.path.join(out, "inference", "mine_gt", "results.json")) as f:
            eval_only = json.load(f)
        for task in ("segm", "bbox"):
            result = run_script("tools/evaluate_ovis.py", "--gt", os.path.join(root, "gt.json"), "--dt", self.reference,
                                "--split", os.path.join(self.tmp.name, "data", "split.json"), "--iou-type", task,
                                "--json-out", os.path.join(root, f"{task}.json"))
            with open(os.path.join(root, f"{task}.json")) as f:
                ours = json.load(f)[task]
            self.assertGreater(ours["AP50"], 10.0, result.stdout)
            self.assertEqual(set(ours), set(eval_only[task]))
            for metric, value in ours.items():  # AP, AP50, AP75, by split and per class; nan where a split has no object
                expected = eval_only[task][metric]
                if not (math.isnan(value) and math.isnan(expected)):
                    self.assertAlmostEqual(value, expected, places=6, msg=f"{task} {metric}")

    def test_two_processes_and_three_shards_write_the_same_file(self):
        root = tempfile.mkdtemp(dir=self.tmp.name)
        two = os.path.join(root, "two", "val.json")  # the same name: the file names its provenance file
        self.predict(self.val, two, "--keep-empty-masks", "--num-gpus", "2")
        self.assertTrue(filecmp.cmp(self.reference, two, shallow=False))
        three = os.path.join(root, "three", "val.json")
        for index in (2, 0, 1):
            self.predict(self.val, three, "--keep-empty-masks", "--num-shards", "3", "--shard-index", str(index))
        self.assertFalse(os.path.exists(three))
        run_script("tools/predict.py", "--output", three, "--merge", "--keep-empty-masks")
        self.assertTrue(filecmp.cmp(self.reference, three, shallow=False))
        rerun = self.predict(self.val, three, "--keep-empty-masks", "--num-shards", "3")  # finished shards: only the merge
        self.assertNotIn("predict 1/3", rerun.stderr)
        self.assertTrue(filecmp.cmp(self.reference, three, shallow=False))

    def test_unreadable_image_is_counted_and_named_and_drawings_are_written(self):
        root = tempfile.mkdtemp(dir=self.tmp.name)
        folder = os.path.join(root, "photos", "nested")
        shutil.copytree(self.val, folder)
        with open(os.path.join(folder, "broken.png"), "wb") as f:
            f.write(b"not a png")
        out = os.path.join(root, "photos.json")
        result = self.predict(os.path.join(root, "photos"), out, "--draw", os.path.join(root, "drawn"), "--confidence-threshold", "0.3")
        self.assertIn("1 unreadable: nested/broken.png", result.stdout)
        data, _ = self.load(out)
        self.assertEqual(len(data["images"]), 6)
        self.assertTrue(all(a["score"] >= 0.3 and a["area"] > 0 for a in data["annotations"]))
        self.assertEqual(sorted(os.listdir(os.path.join(root, "drawn", "nested"))), [f"10000{i}.png" for i in range(1, 7)])

    def test_other_inputs_list_the_same_images(self):
        from xpseudo.predict.inputs import resolve_input
        from xpseudo.utils.io import InputError

        folder = resolve_input(self.val)
        glob = resolve_input(os.path.join(self.val, "*.png"))
        listing = os.path.join(self.tmp.name, "list.txt")
        with open(listing, "w") as f:
            f.write("# val images\n" + "".join(f"data/images/val/{r['file_name'].rsplit('/', 1)[-1]}\n" for r in folder.records))
        listed = resolve_input(listing)
        self.assertEqual(folder.records, glob.records)
        self.assertEqual(folder.records, listed.records)
        self.assertEqual(folder.image_root, self.val)
        with self.assertRaisesRegex(InputError, "matches a file"):
            resolve_input(os.path.join(self.tmp.name, "nothing", "*.jpg"))

    def test_a_class_without_embedding_is_a_one_line_error(self):
        result = self.predict(self.val, os.path.join(self.tmp.name, "x.json"), vocabulary="star,zebra,kite", check=False)
        self.assertEqual(result.returncode, 2)
        last = result.stderr.strip().splitlines()[-1]
        self.assertRegex(last, r"^error: .*emb\.npy: no text embedding for 'zebra', 'kite' \(2 of the 3 classes")
        self.assertNotIn("Traceback", result.stderr)

    def test_the_student_trains_on_predictions(self):
        """One model's predictions label data for the next: predict the train images, train on them."""
        root = tempfile.mkdtemp(dir=self.tmp.name)
        with open(os.path.join(root, "datasets.yaml"), "w") as f:
            data = os.path.join(self.tmp.name, "data")
            f.write(f"datasets:\n  - {{name: mine_train, kind: instances, image_root: {data}/images/train, "
                    f"json: {data}/annotations/instances_train_base.json, split: {data}/split.json, vocabulary: {self.vocabulary}}}\n")
        files = ["XPM.DATASET_FILES", f"('{os.path.join(root, 'datasets.yaml')}',)"]
        labels = os.path.join(root, "labels.json")
        self.predict("mine_train", labels, "--confidence-threshold", "0.2", *files)
        with open(os.path.join(root, "labels.provenance.json")) as f:
            self.assertEqual(json.load(f)["dataset"], "mine_train")  # the student finds the images through it
        out = os.path.join(root, "student")
        run_script("tools/train_net.py", "--config-file", STUDENT, *self.opts, *files, "MODEL.WEIGHTS", self.weights,
                   "XPM.PSEUDO_LABELS_FILE", labels, "DATASETS.TRAIN", "('mine_train',)", "DATASETS.TEST", "()",
                   "SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.BASE_LR", "0.001", "OUTPUT_DIR", out, env=self.env)
        self.assertTrue(os.path.exists(os.path.join(out, "model_final.pth")))


if __name__ == "__main__":
    unittest.main()
