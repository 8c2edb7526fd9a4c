"""Multi-process training and evaluation on CPU (gloo, DistributedDataParallel without device_ids),
as a multi-GPU node runs them: teacher and student keep every process's weights identical, the
student survives its sigma freeze, evaluation gathers on rank 0, and the multi-machine rendezvous
(--num-machines 2, launched twice) works."""
import filecmp
import os
import socket
import subprocess
import sys
import tempfile
import unittest

from tests.helpers import REPO, make_shapes, requires_detectron2, run_script, write_shape_embeddings

TEACHER = "configs/shapes/xpm_teacher_R18_FPN.yaml"
STUDENT = "configs/shapes/xpm_student_R18_FPN.yaml"
GROUNDING = "configs/shapes/xpm_grounding_R18_FPN.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@requires_detectron2
class TestMultiProcessTraining(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        import torch

        cls.torch = torch
        cls.tmp = tempfile.TemporaryDirectory()
        root = cls.tmp.name
        make_shapes(os.path.join(root, "shapes"), num_train=8, num_val=4, image_size=96)
        emb = write_shape_embeddings(os.path.join(root, "emb.npy"))
        cls.env = {"DETECTRON2_DATASETS": root}
        # 1 annotated + 1 caption image per process
        cls.opts = ["MODEL.XPM.TEXT_EMBEDDINGS", emb, "MODEL.XPM.EMBEDDING_DIM", "32", "DATALOADER.NUM_WORKERS", "0",
                    "SOLVER.IMS_PER_BATCH", "2", "XPM.CAPTION_IMS_PER_BATCH", "2", "MODEL.DEVICE", "cpu"]
        cls.teacher_dir = os.path.join(root, "teacher")
        cls.teacher_dump = os.path.join(root, "teacher_ranks")
        cls.train("--num-gpus", "2", "--config-file", TEACHER, "--dump", cls.teacher_dump, *cls.opts,
                  "SOLVER.MAX_ITER", "4", "SOLVER.BASE_LR", "0.001", "DATASETS.TEST", "()", "OUTPUT_DIR", cls.teacher_dir)
        cls.weights = os.path.join(cls.teacher_dir, "model_final.pth")
        cls.labels = os.path.join(root, "labels")
        run_script("tools/generate_pseudo_labels.py", "--config-file", TEACHER, "--dataset", "shapes_train_captions",
                   "--output", cls.labels, *cls.opts, "MODEL.WEIGHTS", cls.weights, "XPM.PSEUDO_LABELS.UNCERTAIN_BAND", "(0.3, 0.7)",
                   env=cls.env)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    @classmethod
    def train(cls, *args):
        result = subprocess.run([sys.executable, "-m", "tests.train_and_dump_weights", *args], cwd=REPO, capture_output=True,
                                text=True, env={**os.environ, **cls.env}, timeout=600)
        if result.returncode != 0:
            raise AssertionError(f"training failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
        return result

    def load_ranks(self, dump):
        return [self.torch.load(os.path.join(dump, f"rank{r}.pth")) for r in range(2)]

    def assert_same_parameters(self, ranks, model_file):
        saved = self.torch.load(model_file)["model"]  # rank 0's
        self.assertEqual(set(ranks[0]), set(ranks[1]))
        self.assertEqual(set(ranks[0]), set(saved))
        for name in ranks[0]:
            if "running_" in name or "num_batches_tracked" in name:
                continue  # batch-norm statistics are per process (detectron2's broadcast_buffers=False)
            self.assertTrue(self.torch.equal(ranks[0][name], ranks[1][name]), name)
            self.assertTrue(self.torch.equal(ranks[0][name], self.torch.as_tensor(saved[name])), name)

    def test_teacher_with_grounding_keeps_the_processes_identical(self):
        self.assert_same_parameters(self.load_ranks(self.teacher_dump), self.weights)
        with open(os.path.join(self.teacher_dir, "log.txt")) as f:
            log = f.read()
        self.assertIn("World size: 2", log)
        self.assertIn("loss_grounding", log)

    def test_grounding_pretraining_keeps_the_processes_identical(self):
        """Only parameters the grid grounding reaches are trained: DDP without an unused-parameter search."""
        out, dump = os.path.join(self.tmp.name, "grounding"), os.path.join(self.tmp.name, "grounding_ranks")
        self.train("--num-gpus", "2", "--config-file", GROUNDING, "--dump", dump, *self.opts, "MODEL.XPM.GROUNDING.WORDS", "vocabulary",
                   "SOLVER.MAX_ITER", "3", "OUTPUT_DIR", out)
        self.assert_same_parameters(self.load_ranks(dump), os.path.join(out, "model_final.pth"))
        with open(os.path.join(out, "log.txt")) as f:
            log = f.read()
        self.assertIn("World size: 2", log)
        self.assertIn("total_loss", log)  # its only loss is the grounding loss

    def test_paper_grounding_contrasts_within_each_process_and_keeps_them_identical(self):
        """configs/shapes_paper: each process contrasts its own caption images (2 here), the whole
        model's gradient clipped to norm 5."""
        out, dump = os.path.join(self.tmp.name, "paper_grounding"), os.path.join(self.tmp.name, "paper_grounding_ranks")
        self.train("--num-gpus", "2", "--config-file", "configs/shapes_paper/xpm_grounding_R18_FPN.yaml", "--dump", dump, *self.opts,
                   "XPM.CAPTION_IMS_PER_BATCH", "4", "MODEL.XPM.GROUNDING.WORDS", "vocabulary", "SOLVER.MAX_ITER", "3", "OUTPUT_DIR", out)
        self.assert_same_parameters(self.load_ranks(dump), os.path.join(out, "model_final.pth"))
        with open(os.path.join(out, "log.txt")) as f:
            log = f.read()
        self.assertIn("World size: 2", log)
        with open(os.path.join(out, "config.yaml")) as f:
            self.assertIn("CONTRAST_ACROSS_PROCESSES: false", f.read())

    def test_student_survives_the_sigma_freeze_with_identical_processes(self):
        out, dump = os.path.join(self.tmp.name, "student"), os.path.join(self.tmp.name, "student_ranks")
        self.train("--num-gpus", "2", "--config-file", STUDENT, "--dump", dump, *self.opts, "MODEL.WEIGHTS", self.weights,
                   "XPM.PSEUDO_LABELS_FILE", os.path.join(self.labels, "pseudo_labels.json"),
                   "MODEL.XPM.STUDENT.SIGMA_FREEZE_ITER", "2", "SOLVER.MAX_ITER", "6", "SOLVER.CHECKPOINT_PERIOD", "2",
                   "DATASETS.TEST", "()", "OUTPUT_DIR", out)
        final = os.path.join(out, "model_final.pth")
        ranks = self.load_ranks(dump)
        self.assert_same_parameters(ranks, final)
        # trained for iterations 0 and 1 (checkpoint model_0000001 is after them), frozen from 2 on
        before_freeze = self.torch.load(os.path.join(out, "model_0000001.pth"))["model"]
        initial = self.torch.load(self.weights)["model"]
        sigma = "roi_heads.mask_head.sigma.3.weight"
        self.assertNotIn(sigma, initial)  # the teacher has no sigma branch: it started from its init
        self.assertTrue(self.torch.equal(ranks[0][sigma], before_freeze[sigma]))
        predictor = "roi_heads.mask_head.predictor.weight"
        self.assertFalse(self.torch.equal(ranks[0][predictor], before_freeze[predictor]))  # the rest trains on

    def test_paper_student_keeps_the_processes_identical_through_its_sigma_freeze(self):
        """configs/shapes_paper's student: the one-conv sigma branch, the two-means mask loss, the
        loss divided by the RoI count, backbone and RPN frozen."""
        out, dump = os.path.join(self.tmp.name, "paper_student"), os.path.join(self.tmp.name, "paper_student_ranks")
        self.train("--num-gpus", "2", "--config-file", "configs/shapes_paper/xpm_student_R18_FPN.yaml", "--dump", dump, *self.opts,
                   "MODEL.WEIGHTS", self.weights, "XPM.PSEUDO_LABELS_FILE", os.path.join(self.labels, "pseudo_labels.json"),
                   "MODEL.XPM.STUDENT.SIGMA_FREEZE_ITER", "2", "SOLVER.MAX_ITER", "4", "SOLVER.CHECKPOINT_PERIOD", "2",
                   "SOLVER.WARMUP_ITERS", "1", "DATASETS.TEST", "()", "OUTPUT_DIR", out)
        ranks = self.load_ranks(dump)
        self.assert_same_parameters(ranks, os.path.join(out, "model_final.pth"))
        sigma = "roi_heads.mask_head.sigma.weight"  # one 1x1 conv
        self.assertEqual(tuple(ranks[0][sigma].shape[:2]), (1, 64))
        before_freeze = self.torch.load(os.path.join(out, "model_0000001.pth"))["model"]
        self.assertTrue(self.torch.equal(ranks[0][sigma], before_freeze[sigma]))  # frozen from iteration 2 on
        predictor = "roi_heads.mask_head.predictor.weight"
        self.assertFalse(self.torch.equal(ranks[0][predictor], before_freeze[predictor]))

    def test_a_later_round_labeled_by_a_student_and_weighted_by_its_own_view_keeps_the_processes_identical(self):
        """run_pipeline.py --rounds: a student's model labels the captions (its mask head also
        gives sigma), and the next student weights pseudo objects as the default does, by mask
        agreement x class probability over its class's running mean (blended in over 2
        iterations here), and weights their mask losses too; the class means are summed over the
        processes, so both hold the same."""
        import json

        labels = os.path.join(self.tmp.name, "round2_labels")
        run_script("tools/generate_pseudo_labels.py", "--config-file", STUDENT, "--dataset", "shapes_train_captions",
                   "--output", labels, *self.opts, "MODEL.WEIGHTS", self.weights, env=self.env)
        with open(os.path.join(labels, "provenance.json")) as f:
            self.assertGreater(json.load(f)["counts"]["annotations"], 0)
        out, dump = os.path.join(self.tmp.name, "round2_student"), os.path.join(self.tmp.name, "round2_student_ranks")
        self.train("--num-gpus", "2", "--config-file", STUDENT, "--dump", dump, *self.opts, "MODEL.WEIGHTS", self.weights,
                   "XPM.PSEUDO_LABELS_FILE", os.path.join(labels, "pseudo_labels.json"),
                   "MODEL.XPM.STUDENT.WEIGHT_WARMUP_ITERS", "2", "MODEL.XPM.STUDENT.WEIGHT_MASK_LOSS", "True",
                   "SOLVER.MAX_ITER", "4", "DATASETS.TEST", "()", "OUTPUT_DIR", out)
        self.assert_same_parameters(self.load_ranks(dump), os.path.join(out, "model_final.pth"))
        means = [self.torch.load(os.path.join(dump, f"rank{r}_unsaved.pth"))["roi_heads.class_signal_means"] for r in range(2)]
        seen = self.torch.isfinite(means[0])
        self.assertTrue(seen.any())
        self.assertTrue(self.torch.equal(seen, self.torch.isfinite(means[1])))
        self.assertTrue(self.torch.equal(means[0][seen], means[1][seen]))
        self.assertTrue(((means[0][seen] >= 0) & (means[0][seen] <= 1)).all())  # means of IoU x probability
        with open(os.path.join(out, "metrics.json")) as f:
            weights = [json.loads(line).get("noise_aware/pseudo_box_weight") for line in f if line.strip()]
        weights = [w for w in weights if w is not None]
        self.assertTrue(weights and all(0 < w <= 4 for w in weights), weights)  # PSEUDO_LOSS_WEIGHT 2 x relative, capped at 2

    def test_student_with_prototype_contrast_and_confidence_guided_loss_keeps_the_processes_identical(self):
        """The prototypes are per-process buffers (no broadcast): their update sums over processes."""
        out, dump = os.path.join(self.tmp.name, "student_parts"), os.path.join(self.tmp.name, "student_parts_ranks")
        self.train("--num-gpus", "2", "--config-file", STUDENT, "--dump", dump, *self.opts, "MODEL.WEIGHTS", self.weights,
                   "XPM.PSEUDO_LABELS_FILE", os.path.join(self.labels, "pseudo_labels.json"),
                   "MODEL.XPM.STUDENT.MASK_LOSS", "confidence_guided", "MODEL.XPM.PROTOTYPE_CONTRAST.WEIGHT", "0.1",
                   "SOLVER.MAX_ITER", "4", "DATASETS.TEST", "()", "OUTPUT_DIR", out)
        ranks = self.load_ranks(dump)
        self.assert_same_parameters(ranks, os.path.join(out, "model_final.pth"))
        self.assertTrue(ranks[0]["roi_heads.mask_head.prototypes.initialized"].any())
        self.assertTrue(ranks[0]["roi_heads.mask_head.prototypes.initialized"][-1])  # background seen
        with open(os.path.join(out, "log.txt")) as f:
            self.assertIn("loss_prototype", f.read())

    def test_a_bad_pseudo_label_file_stops_every_process(self):
        """Rank 0 indexes the file; its error reaches rank 1, which would otherwise wait for ever."""
        import json
        import shutil

        bad_dir = os.path.join(self.tmp.name, "bad_labels")
        shutil.copytree(self.labels, bad_dir)
        os.remove(os.path.join(bad_dir, "pseudo_labels.index"))
        with open(os.path.join(bad_dir, "pseudo_labels.json")) as f:
            labels = json.load(f)
        labels["annotations"][0]["category_id"] = 999
        with open(os.path.join(bad_dir, "pseudo_labels.json"), "w") as f:
            json.dump(labels, f)
        result = subprocess.run([sys.executable, "-m", "tests.train_and_dump_weights", "--num-gpus", "2", "--config-file", STUDENT,
                                 "--dump", os.path.join(self.tmp.name, "bad_ranks"), *self.opts, "MODEL.WEIGHTS", self.weights,
                                 "XPM.PSEUDO_LABELS_FILE", os.path.join(bad_dir, "pseudo_labels.json"), "SOLVER.MAX_ITER", "2",
                                 "DATASETS.TEST", "()", "OUTPUT_DIR", os.path.join(self.tmp.name, "bad_student")],
                                cwd=REPO, capture_output=True, text=True, env={**os.environ, **self.env}, timeout=300)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("pseudo_labels.json: annotations[0] (id 1): category_id 999 is not among the categories", result.stderr)

    def test_two_process_evaluation_equals_one_process(self):
        results = {}
        for gpus in ("1", "2"):
            out = os.path.join(self.tmp.name, f"eval_{gpus}")
            # threshold 0: every image keeps its 20 detections, so the comparison is not of empty files
            run_script("tools/train_net.py", "--eval-only", "--num-gpus", gpus, "--config-file", TEACHER, *self.opts,
                       "MODEL.WEIGHTS", self.weights, "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "OUTPUT_DIR", out, env=self.env)
            results[gpus] = os.path.join(out, "inference", "shapes_val")
        for name in ("results.json", "coco_instances_results.json"):
            self.assertTrue(filecmp.cmp(os.path.join(results["1"], name), os.path.join(results["2"], name), shallow=False), name)
        import json

        with open(os.path.join(results["2"], "coco_instances_results.json")) as f:
            self.assertEqual(len({d["image_id"] for d in json.load(f)}), 4)  # both processes' images are there

    def test_two_machines_rendezvous(self):
        out = os.path.join(self.tmp.name, "two_machines")
        url = f"tcp://127.0.0.1:{free_port()}"
        machines = [subprocess.Popen([sys.executable, os.path.join(REPO, "tools", "train_net.py"), "--num-gpus", "1", "--num-machines", "2",
                                      "--machine-rank", str(rank), "--dist-url", url, "--config-file", TEACHER, *self.opts,
                                      "SOLVER.MAX_ITER", "2", "DATASETS.TEST", "()", "OUTPUT_DIR", out],
                                     cwd=REPO, env={**os.environ, **self.env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                    for rank in (0, 1)]
        outputs = [m.communicate(timeout=600)[0] for m in machines]
        self.assertEqual([m.returncode for m in machines], [0, 0], outputs[1][-3000:])
        self.assertTrue(os.path.exists(os.path.join(out, "model_final.pth")))
        with open(os.path.join(out, "log.txt")) as f:
            self.assertIn("World size: 2", f.read())


if __name__ == "__main__":
    unittest.main()
