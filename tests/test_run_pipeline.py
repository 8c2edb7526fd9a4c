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
            args = ["tools/run_pipeline.py", "--config-dir", "configs/shapes", "--output", out, "--num-shards", "2", "--opts",
                    "MODEL.XPM.TEXT_EMBEDDINGS", emb, "MODEL.XPM.EMBEDDING_DIM", "32", "DATALOADER.NUM_WORKERS", "0",
                    "SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "2", "XPM.CAPTION_IMS_PER_BATCH", "2"]
            first = run_script(*args, env={"DETECTRON2_DATASETS": tmp})
            for stage in ("teacher", "pseudo labels", "student"):
                self.assertIn(f"=== {stage}:", first.stdout)
            for path in ("teacher/model_final.pth", "teacher/inference/shapes_val/results.json",
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
