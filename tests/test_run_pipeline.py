import json
import os
import tempfile
import unittest

from tests.helpers import make_shapes, requires_detectron2, run_script, write_shape_embeddings


@requires_detectron2
class TestRunPipeline(unittest.TestCase):
    def test_every_stage_runs_then_a_rerun_skips_them(self):
        with tempfile.TemporaryDirectory() as tmp:
            make_shapes(os.path.join(tmp, "shapes"), num_train=8, num_val=4, image_size=96)
            emb = write_shape_embeddings(os.path.join(tmp, "emb.npy"))
            out = os.path.join(tmp, "out")
            args = ["tools/run_pipeline.py", "--config-dir", "configs/shapes", "--output", out, "--num-shards", "2", "--grounding", "--opts",
                    "MODEL.XPM.TEXT_EMBEDDINGS", emb, "MODEL.XPM.EMBEDDING_DIM", "32", "DATALOADER.NUM_WORKERS", "0",
                    "SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "2", "XPM.CAPTION_IMS_PER_BATCH", "2",
                    # the test's 32-d class embeddings: ground on class words (no text tower for the rest)
                    "--grounding-opts", "MODEL.XPM.GROUNDING.WORDS", "vocabulary"]
            first = run_script(*args, env={"DETECTRON2_DATASETS": tmp})
            for stage in ("grounding", "teacher", "pseudo labels", "student"):
                self.assertIn(f"=== {stage}:", first.stdout)
            with open(os.path.join(out, "teacher", "log.txt")) as f:  # the teacher starts from stage 1
                self.assertIn(os.path.join(out, "grounding", "model_final.pth"), f.read())
            for path in ("grounding/model_final.pth", "teacher/model_final.pth", "teacher/inference/shapes_val/results.json",
                         "pseudo_labels/pseudo_labels.json", "pseudo_labels/provenance.json",
                         "pseudo_labels/shards/shard-00001-of-00002.jsonl",
                         "student/model_final.pth", "student/inference/shapes_val/results.json", "summary.json"):
                self.assertTrue(os.path.exists(os.path.join(out, path)), path)
            with open(os.path.join(out, "summary.json")) as f:
                summary = json.load(f)
            models = summary["results"]["shapes_val"]
            self.assertEqual(set(models), {"teacher", "student"})
            for model in models.values():
                for task in ("segm", "bbox"):
                    self.assertIn("AP50_novel", model[task])
                    self.assertIn("AP50_base", model[task])
            self.assertEqual(summary["pseudo_label_counts"]["images"], 8)
            self.assertIn("student segm", first.stdout)
            second = run_script(*args, env={"DETECTRON2_DATASETS": tmp})
            self.assertNotIn("===", second.stdout)  # every stage's output exists: nothing reruns
            self.assertIn("teacher segm", second.stdout)


if __name__ == "__main__":
    unittest.main()


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
