"""tools/benchmark.py --task pseudo-load runs end to end on a small set (its goals are checked by
running it at 1M images, not here)."""
import json
import os
import tempfile
import unittest

from tests.helpers import requires_detectron2, run_script


@requires_detectron2
class TestPseudoLoadBenchmark(unittest.TestCase):
    def test_small_run(self):
        with tempfile.TemporaryDirectory() as tmp:
            work, out = os.path.join(tmp, "work"), os.path.join(tmp, "result.json")
            printed = run_script("tools/benchmark.py", "--task", "pseudo-load", "--num-images", "300", "--work", work, "--json-out", out).stdout
            self.assertIn("second process adds", printed)
            result = json.load(open(out))
            with open(os.path.join(work, "pseudo_labels.json")) as f:
                merged = json.load(f)
            # 1 + k % 4 masks on image k: 300 + 75 * (0 + 1 + 2 + 3)
            self.assertEqual((len(merged["images"]), len(merged["annotations"])), (300, 750))
            self.assertEqual([len(result[f"load_{p}_processes"]) for p in (1, 2)], [1, 2])
            for ranks in (result["load_1_processes"], result["load_2_processes"]):
                for rank in ranks:
                    self.assertGreater(rank["startup_s"], 0)
                    self.assertGreater(rank["imports_mb"], 100)  # torch and detectron2 are in
                    self.assertGreaterEqual(rank["peak_above_imports_mb"], rank["startup_peak_above_imports_mb"])
            self.assertGreater(result["merge_s"], 0)


if __name__ == "__main__":
    unittest.main()
