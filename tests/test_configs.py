import glob
import os
import unittest

import tempfile

from tests.helpers import REPO, requires_detectron2, write_custom_dataset_file

CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True))


@requires_detectron2
class TestConfigs(unittest.TestCase):
    def test_every_config_parses_and_names_registered_datasets(self):
        from detectron2.data import DatasetCatalog, MetadataCatalog

        import xpseudo.data.builtin  # noqa: F401
        from xpseudo.config import load_config

        self.assertGreaterEqual(len(CONFIGS), 10)
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        dataset_file = write_custom_dataset_file(tmp.name)  # the names configs/custom expect from a user's file
        self.addCleanup(lambda: [(DatasetCatalog.remove(n), MetadataCatalog.remove(n)) for n in DatasetCatalog.list() if n.startswith("custom_")])
        for path in CONFIGS:
            with self.subTest(config=os.path.relpath(path, REPO)):
                custom = os.path.basename(os.path.dirname(path)) == "custom"
                cfg = load_config(path, ["XPM.DATASET_FILES", f"('{dataset_file}',)"] if custom else [])
                registered = set(DatasetCatalog.list())
                names = list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST) + list(cfg.XPM.CAPTION_DATASETS)
                names += [cfg.XPM.PSEUDO_LABELED_DATASET] if cfg.XPM.PSEUDO_LABELED_DATASET else []
                self.assertEqual([n for n in names if n not in registered], [])

    def test_student_configs_start_from_their_teacher(self):
        from xpseudo.config import load_config

        for family in ("coco", "openimages_cc", "lvis", "custom"):
            with self.subTest(family=family):
                (teacher,) = glob.glob(os.path.join(REPO, "configs", family, "xpm_teacher_*.yaml"))
                (student,) = glob.glob(os.path.join(REPO, "configs", family, "xpm_student_*.yaml"))
                teacher, student = load_config(teacher), load_config(student)
                self.assertEqual(student.MODEL.META_ARCHITECTURE, "XPMStudent")
                self.assertEqual(student.DATASETS.TRAIN, teacher.DATASETS.TRAIN)
                self.assertEqual(student.DATASETS.TEST, teacher.DATASETS.TEST)
                self.assertIn(student.XPM.PSEUDO_LABELED_DATASET or teacher.XPM.CAPTION_DATASETS[0], teacher.XPM.CAPTION_DATASETS)


if __name__ == "__main__":
    unittest.main()
