import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest
from unittest import mock

from tests.helpers import (REPO, make_shapes, requires_detectron2, run_script, tiny_custom_opts, write_custom_dataset_file,
                           write_shape_embeddings)


@requires_detectron2
class TestRunPipeline(unittest.TestCase):
    def test_every_stage_runs_then_a_rerun_skips_them(self):
        with tempfile.TemporaryDirectory() as tmp:
            make_shapes(os.path.join(tmp, "shapes"), num_train=8, num_val=4, image_size=96)
            emb = write_shape_embeddings(os.path.join(tmp, "emb.npy"))
            out = os.path.join(tmp, "out")
            # no --grounding: stage 1 runs because configs/shapes has its config
            args = ["tools/run_pipeline.py", "--config-dir", "configs/shapes", "--output", out, "--num-shards", "2", "--opts",
                    "MODEL.XPM.TEXT_EMBEDDINGS", emb, "MODEL.XPM.EMBEDDING_DIM", "32", "DATALOADER.NUM_WORKERS", "0",
                    "SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "2", "XPM.CAPTION_IMS_PER_BATCH", "2",
                    # the test's 32-d class embeddings: ground on class words (no text tower for the rest)
                    "--grounding-opts", "MODEL.XPM.GROUNDING.WORDS", "vocabulary", "--rounds", "2", "--oracle"]
            first = run_script(*args, env={"DETECTRON2_DATASETS": tmp})
            for stage in ("grounding", "teacher", "pseudo labels", "student", "pseudo labels round 2", "student round 2", "oracle"):
                self.assertIn(f"=== {stage}:", first.stdout)
            with open(os.path.join(out, "teacher", "log.txt")) as f:  # the teacher starts from stage 1
                self.assertIn(os.path.join(out, "grounding", "model_final.pth"), f.read())
            for path in ("grounding/model_final.pth", "teacher/model_final.pth", "teacher/inference/shapes_val/results.json",
                         "pseudo_labels/pseudo_labels.json", "pseudo_labels/provenance.json",
                         "pseudo_labels/shards/shard-00001-of-00002.jsonl",
                         "student/model_final.pth", "student/inference/shapes_val/results.json", "summary.json",
                         "round2/pseudo_labels/pseudo_labels.json", "round2/student/model_final.pth", "oracle/model_final.pth"):
                self.assertTrue(os.path.exists(os.path.join(out, path)), path)
            with open(os.path.join(out, "summary.json")) as f:
                summary = json.load(f)
            models = summary["results"]["shapes_val"]
            self.assertEqual(set(models), {"teacher", "student", "student round 2", "oracle"})
            with open(os.path.join(out, "round2", "student", "log.txt")) as f:  # round 2 learns from round 2's labels
                self.assertIn(os.path.join(out, "round2", "pseudo_labels", "pseudo_labels.json"), f.read())
            # each round's labels scored on the labeled images against shapes_train_all, as evaluate_ovis.py scores them
            quality = summary["pseudo_label_quality"]
            self.assertEqual(quality["ground_truth"], "shapes_train_all")
            for name, folder in (("round 1", "pseudo_labels"), ("round 2", "round2/pseudo_labels")):
                scored = os.path.join(tmp, f"{name}.json")
                run_script("tools/evaluate_ovis.py", "--gt", os.path.join(tmp, "shapes", "annotations", "instances_train_all.json"),
                           "--dt", os.path.join(out, folder, "pseudo_labels.json"), "--split", os.path.join(tmp, "shapes", "split.json"),
                           "--json-out", scored)
                with open(scored) as f:
                    direct = json.load(f)["segm"]
                for key in ("AP50", "AP75", "AP50_novel", "AP50_base"):
                    self.assertAlmostEqual(quality[name]["segm"][key], direct[key], places=6, msg=(name, key))
            self.assertIn("pseudo labels against shapes_train_all", first.stdout)
            for model in models.values():
                for task in ("segm", "bbox"):
                    self.assertIn("AP50_novel", model[task])
                    self.assertIn("AP50_base", model[task])
            self.assertEqual(summary["pseudo_label_counts"]["images"], 8)
            self.assertIn("student segm", first.stdout)
            second = run_script(*args, env={"DETECTRON2_DATASETS": tmp})
            self.assertNotIn("===", second.stdout)  # every stage's output exists: nothing reruns
            self.assertIn("teacher segm", second.stdout)


@requires_detectron2
class TestPipelineOnADatasetFile(unittest.TestCase):
    def test_configs_custom_run_end_to_end_from_a_dataset_file(self):
        """Your own data, no Python: a dataset file under new names in another folder, given once
        on the command line (relative to the working directory) and seen by every stage."""
        with tempfile.TemporaryDirectory() as tmp:
            mine = os.path.join(tmp, "mine")
            write_custom_dataset_file(mine)
            emb = write_shape_embeddings(os.path.join(tmp, "emb.npy"))
            out = os.path.join(tmp, "out")
            result = subprocess.run(
                [sys.executable, os.path.join(REPO, "tools", "run_pipeline.py"), "--config-dir", os.path.join(REPO, "configs", "custom"),
                 "--output", out, "--opts", *tiny_custom_opts(emb), "XPM.DATASET_FILES", "('mine/datasets.yaml',)",
                 "--grounding-opts", "MODEL.XPM.GROUNDING.WORDS", "vocabulary"],
                cwd=tmp, env={**os.environ, "DETECTRON2_DATASETS": os.path.join(tmp, "no_builtin_data")}, capture_output=True, text=True)
            self.assertEqual(result.returncode, 0, result.stdout[-3000:] + result.stderr[-3000:])
            for stage in ("grounding", "teacher", "pseudo labels", "student"):
                self.assertIn(f"=== {stage}:", result.stdout)
            with open(os.path.join(out, "summary.json")) as f:
                summary = json.load(f)
            self.assertEqual(set(summary["results"]["custom_val"]), {"teacher", "student"})
            self.assertIn("AP50_novel", summary["results"]["custom_val"]["student"]["segm"])
            self.assertEqual(summary["pseudo_label_counts"]["images"], 8)
            with open(os.path.join(out, "pseudo_labels", "provenance.json")) as f:
                self.assertEqual(json.load(f)["dataset"], "custom_train_captions")
            with open(os.path.join(out, "student", "config.yaml")) as f:  # the file, absolute, reached the student
                self.assertIn(os.path.join(mine, "datasets.yaml"), f.read())
            # README's next steps with the student: label a folder, export with the same vocabulary
            student = [*tiny_custom_opts(emb), "MODEL.WEIGHTS", os.path.join(out, "student", "model_final.pth"),
                       "XPM.DATASET_FILES", f"('{os.path.join(mine, 'datasets.yaml')}',)"]
            config = os.path.join(REPO, "configs", "custom", "xpm_student_R50_FPN_1x.yaml")
            photos = os.path.join(mine, "data", "images", "val")
            run_script("tools/predict.py", "--config-file", config, "--input", photos, "--vocabulary", "star,cross,crescent",
                       "--output", os.path.join(tmp, "photos.json"), "--draw", os.path.join(tmp, "photos_drawn"), *student)
            with open(os.path.join(tmp, "photos.json")) as f:
                labeled = json.load(f)
            self.assertEqual(len(labeled["images"]), 4)
            self.assertEqual([c["name"] for c in labeled["categories"]], ["star", "cross", "crescent"])
            self.assertEqual(len(os.listdir(os.path.join(tmp, "photos_drawn"))), 4)
            exported = run_script("tools/export_model.py", "--config-file", config, "--format", "torchscript", "--output",
                                  os.path.join(tmp, "exported"), "--vocabulary", "star,cross,crescent", "--verify",
                                  os.path.join(photos, "100001.png"), os.path.join(photos, "100002.png"), *student)
            self.assertIn("(tolerance 0.0001): OK", exported.stdout)


@requires_detectron2
class TestPaperChain(unittest.TestCase):
    """The authors' chain from one config family: grounding -> teacher -> pseudo labels -> student."""

    def test_dry_run_prints_the_four_stages_of_the_paper_configs(self):
        result = run_script("tools/run_pipeline.py", "--config-dir", "configs/coco_paper", "--output", "/tmp/xpm_plan", "--dry-run",
                            "--slurm", "--num-shards", "4")  # nothing needs COCO on disk, nothing is submitted
        lines = result.stdout.splitlines()
        paper = "configs/coco_paper"  # as given: the stages run in the working directory
        self.assertEqual([line.split(" (")[0] for line in lines[:4]], ["1. grounding", "2. teacher", "3. pseudo labels", "4. student"])
        self.assertIn(f"--config-file {paper}/xpm_grounding_R50_FPN.yaml", lines[0])
        self.assertIn(f"--config-file {paper}/xpm_teacher_R50_FPN_1x.yaml", lines[1])
        self.assertIn("MODEL.WEIGHTS /tmp/xpm_plan/grounding/model_final.pth", lines[1])
        self.assertIn(f"generate_pseudo_labels.py --config-file {paper}/xpm_teacher_R50_FPN_1x.yaml --dataset coco_ovis_train_captions", lines[2])
        self.assertIn("--num-shards 4 MODEL.WEIGHTS /tmp/xpm_plan/teacher/model_final.pth", lines[2])
        self.assertNotIn("grounding/model_final.pth", lines[2])
        self.assertIn(f"--config-file {paper}/xpm_student_R50_FPN_1x.yaml", lines[3])
        self.assertIn("XPM.PSEUDO_LABELS_FILE /tmp/xpm_plan/pseudo_labels/pseudo_labels.json", lines[3])
        self.assertIn("submitted as jobs", result.stdout)
        self.assertFalse(os.path.exists("/tmp/xpm_plan"))

    def test_the_shapes_sized_family_runs_end_to_end(self):
        with tempfile.TemporaryDirectory() as tmp:
            make_shapes(os.path.join(tmp, "shapes"), num_train=8, num_val=4, image_size=96)
            emb = write_shape_embeddings(os.path.join(tmp, "emb.npy"))
            out = os.path.join(tmp, "out")
            run_script("tools/run_pipeline.py", "--config-dir", "configs/shapes_paper", "--output", out, "--opts",
                       "MODEL.XPM.TEXT_EMBEDDINGS", emb, "MODEL.XPM.EMBEDDING_DIM", "32", "DATALOADER.NUM_WORKERS", "0",
                       "SOLVER.MAX_ITER", "3", "SOLVER.WARMUP_ITERS", "1", "SOLVER.IMS_PER_BATCH", "2", "XPM.CAPTION_IMS_PER_BATCH", "2",
                       "--grounding-opts", "MODEL.XPM.GROUNDING.WORDS", "vocabulary", env={"DETECTRON2_DATASETS": tmp})
            with open(os.path.join(out, "summary.json")) as f:
                summary = json.load(f)
            self.assertEqual(set(summary["results"]["shapes_val"]), {"teacher", "student"})
            self.assertTrue(summary["student_config"].endswith("configs/shapes_paper/xpm_student_R18_FPN.yaml"))
            with open(os.path.join(out, "pseudo_labels", "provenance.json")) as f:
                provenance = json.load(f)
            self.assertFalse(provenance["selection"]["normalize_regions"])
            # only the caption images that hold a base annotation were labeled
            with open(os.path.join(tmp, "shapes", "annotations", "instances_train_base.json")) as f:
                base = json.load(f)
            annotated = {im["id"] for im in base["images"] if any(a["image_id"] == im["id"] for a in base["annotations"])}
            self.assertEqual(provenance["counts"]["images"], len(annotated))
            with open(os.path.join(out, "teacher", "log.txt")) as f:
                self.assertIn(os.path.join(out, "grounding", "model_final.pth"), f.read())


@requires_detectron2
class TestGroundingStageChoice(unittest.TestCase):
    """Stage 1 runs where the config folder has an xpm_grounding_*.yaml, unless --no-grounding."""

    def plan(self, config_dir, *flags):
        from xpseudo.pipeline import parse_args, plan

        with mock.patch("xpseudo.pipeline.ensure_data"):  # no dataset needed to plan
            return plan(parse_args(["--config-dir", config_dir, "--output", "/tmp/out", *flags]))

    def test_default_follows_the_folder(self):
        grounding_weights = os.path.join("/tmp/out", "grounding", "model_final.pth")
        default = self.plan("configs/shapes")
        self.assertEqual(os.path.basename(default.grounding_config), "xpm_grounding_R18_FPN.yaml")
        self.assertEqual(default.teacher_train_opts[-2:], ["MODEL.WEIGHTS", grounding_weights])
        self.assertNotIn("MODEL.WEIGHTS", default.teacher_opts)  # the labeling pass uses the teacher's own weights
        skipped = self.plan("configs/shapes", "--no-grounding")
        self.assertIsNone(skipped.grounding_config)
        self.assertNotIn("MODEL.WEIGHTS", skipped.teacher_train_opts)
        self.assertEqual(skipped.teacher_cfg.MODEL.WEIGHTS, "")  # the shapes teacher's own (random init)
        with tempfile.TemporaryDirectory() as tmp:  # a family without stage 1
            folder = os.path.join(tmp, "family")
            os.makedirs(folder)
            shutil.copy(os.path.join("configs", "Base-XPM-RCNN-FPN.yaml"), tmp)  # the configs' _BASE_ is ../
            for name in ("xpm_teacher_R18_FPN.yaml", "xpm_student_R18_FPN.yaml"):
                shutil.copy(os.path.join("configs", "shapes", name), folder)
            self.assertIsNone(self.plan(folder).grounding_config)
            with self.assertRaisesRegex(SystemExit, "--grounding: .* has no xpm_grounding_"):
                self.plan(folder, "--grounding")



@requires_detectron2
class TestRoundsAndOracle(unittest.TestCase):
    """--rounds N: round k's student labels the same dataset, round k+1's student learns from it;
    --oracle: the student's config on ground truth of every class."""

    def stages(self, *flags):
        from xpseudo.pipeline import parse_args, pipeline_stages, plan

        with mock.patch("xpseudo.pipeline.ensure_data"):
            return {s.name: s for s in pipeline_stages(plan(parse_args(["--config-dir", "configs/shapes", "--output", "/tmp/out", *flags])))}

    def test_each_round_labels_with_the_round_before_and_trains_from_the_chosen_start(self):
        stages = self.stages("--rounds", "3", "--oracle", "--teacher-opts", "XPM.PSEUDO_LABELS.PICK_IOU", "0.2", "SOLVER.MAX_ITER", "5")
        self.assertEqual(list(stages), ["grounding", "teacher", "pseudo labels", "student", "pseudo labels round 2", "student round 2",
                                        "pseudo labels round 3", "student round 3", "oracle"])
        teacher, student1 = "/tmp/out/teacher/model_final.pth", "/tmp/out/student/model_final.pth"
        for k, labeler in ((2, student1), (3, "/tmp/out/round2/student/model_final.pth")):
            labels, student = stages[f"pseudo labels round {k}"], stages[f"student round {k}"]
            self.assertEqual(os.path.basename(labels.config_file), "xpm_student_R18_FPN.yaml")
            self.assertEqual(labels.dataset, stages["pseudo labels"].dataset)  # the same weak-label dataset
            self.assertEqual(labels.opts[-4:], ["XPM.PSEUDO_LABELS.PICK_IOU", "0.2", "MODEL.WEIGHTS", labeler])
            self.assertNotIn("SOLVER.MAX_ITER", labels.opts)  # a teacher-only override that is not a labeling one
            self.assertEqual(labels.output, f"/tmp/out/round{k}/pseudo_labels")
            opts = dict(zip(student.opts[0::2], student.opts[1::2]))
            self.assertEqual(opts["MODEL.WEIGHTS"], teacher)
            self.assertEqual(opts["XPM.PSEUDO_LABELS_FILE"], f"/tmp/out/round{k}/pseudo_labels/pseudo_labels.json")
            self.assertEqual(opts["OUTPUT_DIR"], f"/tmp/out/round{k}/student")
        oracle = dict(zip(stages["oracle"].opts[0::2], stages["oracle"].opts[1::2]))
        self.assertEqual((oracle["DATASETS.TRAIN"], oracle["XPM.PSEUDO_LABELS_FILE"], oracle["MODEL.WEIGHTS"]),
                         ("('shapes_train_all',)", "", teacher))
        self.assertEqual(stages["oracle"].after, "teacher")
        from_student = self.stages("--rounds", "3", "--round-init", "student")
        starts = [dict(zip(from_student[f"student round {k}"].opts[0::2], from_student[f"student round {k}"].opts[1::2]))["MODEL.WEIGHTS"]
                  for k in (2, 3)]
        self.assertEqual(starts, [student1, "/tmp/out/round2/student/model_final.pth"])

    def test_an_oracle_needs_an_all_class_dataset(self):
        with self.assertRaisesRegex(SystemExit, "--oracle-dataset nope: no dataset of that name"):
            self.stages("--oracle", "--oracle-dataset", "nope")
        with self.assertRaisesRegex(SystemExit, "no \\*_train_all counterpart"):
            self.stages("--oracle", "--opts", "DATASETS.TRAIN", "('shapes_train_boxes',)")
        with self.assertRaises(SystemExit):  # argparse: at least one round
            self.stages("--rounds", "0")


class TestSummaryTable(unittest.TestCase):
    def test_split_and_lvis_columns(self):
        from xpseudo.pipeline import summary_table

        split = {"AP": 30.0, "AP50": 42.0, "AP_base": 43.5, "AP50_base": 58.8, "AP_novel": 6.3, "AP50_novel": 14.0}
        lvis = {"AP": 20.0, "AP50": 33.0, "APr": 11.25, "APc": 18.5, "APf": 25.0}
        table = summary_table({"results": {"shapes_val": {"teacher": {"segm": split}}, "lvis_ovis_val": {"student": {"segm": lvis, "bbox": {}}}}})
        lines = table.splitlines()
        self.assertEqual(lines[0].split(), ["shapes_val", "AP", "all", "AP", "base", "AP", "novel", "AP50", "all", "AP50", "base", "AP50", "novel"])
        self.assertEqual(lines[1].split()[2:], ["30.00", "43.50", "6.30", "42.00", "58.80", "14.00"])
        self.assertEqual(lines[3].split(), ["lvis_ovis_val", "AP", "AP50", "APr", "APc", "APf"])
        self.assertEqual(lines[4].split()[2:], ["20.00", "33.00", "11.25", "18.50", "25.00"])
        self.assertEqual(lines[5].split()[2:], ["nan"] * 5)


class TestLabeledDataset(unittest.TestCase):
    def test_key_else_first_caption_dataset(self):
        from types import SimpleNamespace

        from xpseudo.pseudo.cli import labeled_dataset

        def cfg(dataset, captions):
            return SimpleNamespace(XPM=SimpleNamespace(PSEUDO_LABELS=SimpleNamespace(DATASET=dataset), CAPTION_DATASETS=captions))

        self.assertEqual(labeled_dataset(cfg("", ("shapes_train_captions", "other"))), "shapes_train_captions")
        self.assertEqual(labeled_dataset(cfg("shapes_train_boxes", ("shapes_train_captions",))), "shapes_train_boxes")
        self.assertIsNone(labeled_dataset(cfg("", ())))


if __name__ == "__main__":
    unittest.main()
