import json
import os
import subprocess
import sys
import tempfile
import unittest

from tests.helpers import requires_detectron2

NEW_DATASETS = [
    "openimages_ovis_train_base", "openimages_ovis_val", "openimages_ovis_val_base", "openimages_ovis_val_novel",
    "cc_captions_train", "lvis_ovis_train_base", "lvis_ovis_val", "lvis_ovis_train_captions",
]


@requires_detectron2
class TestBuiltinDatasets(unittest.TestCase):
    def test_registered_under_detectron2_datasets(self):
        code = (
            "import json\n"
            "from detectron2.data import DatasetCatalog, MetadataCatalog\n"
            "import xpseudo.data.builtin\n"
            "print(json.dumps({n: MetadataCatalog.get(n).as_dict() for n in DatasetCatalog.list()}, default=str))\n"
        )
        with tempfile.TemporaryDirectory() as root:
            result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                    env={**os.environ, "DETECTRON2_DATASETS": root})
            metadata = json.loads(result.stdout.strip().splitlines()[-1])
            for name in NEW_DATASETS:
                with self.subTest(dataset=name):
                    files = [metadata[name].get(k) for k in ("json_file", "captions_file", "image_root")]
                    files = [f for f in files if f]
                    self.assertGreaterEqual(len(files), 2)
                    self.assertTrue(all(f.startswith(root + os.sep) for f in files), files)
        expected = {
            "openimages_ovis_train_base": ("ovis", 300, 100), "openimages_ovis_val": ("ovis", 300, 100),
            "openimages_ovis_val_base": ("ovis", 200, 0), "openimages_ovis_val_novel": ("ovis", 100, 100),
            "cc_captions_train": ("captions", 300, 100), "lvis_ovis_train_base": ("lvis", 1203, 337),
            "lvis_ovis_val": ("lvis", 1203, 337), "lvis_ovis_train_captions": ("captions", 1203, 337),
        }
        self.assertEqual(
            {n: (metadata[n]["evaluator_type"], len(metadata[n]["thing_classes"]), len(metadata[n]["novel_classes"])) for n in NEW_DATASETS},
            expected,
        )
        self.assertEqual(metadata["lvis_ovis_train_base"]["annotations"], "base")
        self.assertEqual(metadata["lvis_ovis_val"]["annotations"], "all")


if __name__ == "__main__":
    unittest.main()
