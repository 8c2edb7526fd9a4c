import glob
import os
import unittest

from tests.helpers import REPO, requires_detectron2

CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True))


@requires_detectron2
class TestConfigs(unittest.TestCase):
    def test_every_config_parses_and_names_registered_datasets(self):
        from detectron2.data import DatasetCatalog

        import xpseudo.data.builtin  # noqa: F401
        from xpseudo.config import load_config

        registered = set(DatasetCatalog.list())
        self.assertGreaterEqual(len(CONFIGS), 10)
        for path in CONFIGS:
            with self.subTest(config=os.path.relpath(path, REPO)):
                cfg = load_config(path)
                names = list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST) + list(cfg.XPM.CAPTION_DATASETS)
                names += [cfg.XPM.PSEUDO_LABELED_DATASET] if cfg.XPM.PSEUDO_LABELED_DATASET else []
                self.assertEqual([n for n in names if n not in registered], [])

    def test_student_configs_start_from_their_teacher(self):
        from xpseudo.config import load_config

        for family in ("coco", "openimages_cc", "lvis"):
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
