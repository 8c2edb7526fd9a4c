"""tools/export_model.py: TorchScript and ONNX exports that compute what the eager model does, with
the vocabulary inside, runnable with torch alone."""
import json
import os
import re
import subprocess
import sys
import tempfile
import unittest

from tests.helpers import make_shapes, requires_detectron2, run_script, write_shape_embeddings
from tests.test_predict import STUDENT, TEACHER, random_teacher

# what README shows: the exported model with torch and torchvision only
STANDALONE = """
import json, sys
import cv2, torch, torchvision  # torchvision registers roi_align and nms, which the graph calls
model = torch.jit.load(sys.argv[1] + "/model.ts")
exported = json.load(open(sys.argv[1] + "/vocabulary.json"))
classes = [c["name"] for c in exported["categories"]]
bgr = cv2.imread(sys.argv[2])  # INPUT.FORMAT BGR; short side resized to min_size_test, long side at most max_size_test
h, w = bgr.shape[:2]
scale = min(exported["input"]["min_size_test"] / min(h, w), exported["input"]["max_size_test"] / max(h, w))
bgr = cv2.resize(bgr, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_LINEAR)
image = torch.as_tensor(bgr).permute(2, 0, 1).float()
boxes, labels, mask_probs, scores, size = model(image)
print(json.dumps({"classes": [classes[i] for i in labels.tolist()], "scores": scores.tolist(),
                  "detectron2": any(m.startswith("detectron2") for m in sys.modules)}))
"""


@requires_detectron2
class TestExportModel(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        root = cls.tmp.name
        make_shapes(os.path.join(root, "data"), num_train=2, num_val=3, image_size=96)
        cls.images = [os.path.join(root, "data", "images", "val", f"10000{i}.png") for i in (1, 2, 3)]
        emb = write_shape_embeddings(os.path.join(root, "emb.npy"))
        cls.opts = ["MODEL.XPM.TEXT_EMBEDDINGS", emb, "MODEL.XPM.EMBEDDING_DIM", "32"]
        cls.weights = random_teacher(os.path.join(root, "teacher.pth"), cls.opts)
        cls.vocabulary = os.path.join(root, "data", "vocabulary.json")

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def export(self, output, *extra, config=TEACHER, fmt="torchscript", check=True):
        return run_script("tools/export_model.py", "--config-file", config, "--format", fmt, "--output", output, "--vocabulary", self.vocabulary,
                          *extra, "--verify", *self.images, *self.opts, "MODEL.WEIGHTS", self.weights, check=check)

    def largest(self, stdout):
        match = re.search(r"verify: largest difference boxes (\S+) px, scores (\S+), mask probabilities (\S+) \(tolerance 0.0001\): OK", stdout)
        self.assertIsNotNone(match, stdout)
        return [float(v) for v in match.groups()]

    def test_torchscript_teacher_and_student_match_eager_and_run_with_torch_alone(self):
        for name, config in (("teacher", TEACHER), ("student", STUDENT)):
            with self.subTest(name):
                out = os.path.join(self.tmp.name, f"ts_{name}")
                result = self.export(out, config=config)
                self.assertTrue(all(v <= 1e-4 for v in self.largest(result.stdout)))
                self.assertRegex(result.stdout, r"100002\.png: [1-9]\d* detections \(exported [1-9]\d*\), classes equal")
                with open(os.path.join(out, "vocabulary.json")) as f:
                    exported = json.load(f)
                with open(self.vocabulary) as f:
                    self.assertEqual(exported["categories"], json.load(f))
                self.assertEqual(exported["outputs"], ["boxes", "classes", "mask_probs", "scores", "image_size"])
        run = subprocess.run([sys.executable, "-c", STANDALONE, os.path.join(self.tmp.name, "ts_teacher"), self.images[1]],
                             capture_output=True, text=True, check=True)
        standalone = json.loads(run.stdout)
        self.assertFalse(standalone["detectron2"])
        self.assertTrue(standalone["classes"])

    def test_vocabulary_changes_the_exported_classes(self):
        out = os.path.join(self.tmp.name, "ts_two")
        result = run_script("tools/export_model.py", "--config-file", TEACHER, "--output", out, "--vocabulary", "star,crescent",
                            "--sample-image", self.images[1], "--verify", *self.images, *self.opts, "MODEL.WEIGHTS", self.weights,
                            "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.2")
        self.largest(result.stdout)
        with open(os.path.join(out, "vocabulary.json")) as f:
            self.assertEqual([c["name"] for c in json.load(f)["categories"]], ["star", "crescent"])
        run = subprocess.run([sys.executable, "-c", STANDALONE, out, self.images[1]], capture_output=True, text=True, check=True)
        classes = json.loads(run.stdout)["classes"]
        self.assertTrue(classes)
        self.assertLessEqual(set(classes), {"star", "crescent"})

    def test_onnx_matches_eager_in_onnxruntime(self):
        out = os.path.join(self.tmp.name, "onnx")
        result = self.export(out, fmt="onnx")
        self.assertTrue(os.path.exists(os.path.join(out, "model.onnx")))
        self.assertTrue(all(v <= 1e-4 for v in self.largest(result.stdout)))

    def test_past_the_tolerance_exits_with_1(self):
        out = os.path.join(self.tmp.name, "strict")
        result = run_script("tools/export_model.py", "--config-file", TEACHER, "--format", "onnx", "--output", out, "--vocabulary",
                            self.vocabulary, "--tolerance", "0", "--verify", *self.images, *self.opts, "MODEL.WEIGHTS", self.weights,
                            check=False)
        largest = re.search(r"mask probabilities (\S+) \(tolerance 0\): (\w+)", result.stdout)
        self.assertIsNotNone(largest, result.stdout + result.stderr)
        # onnxruntime's kernels differ from torch's in the last bits, so nothing is exactly 0
        self.assertEqual((result.returncode, largest.group(2)), (1, "FAILED"))


if __name__ == "__main__":
    unittest.main()
