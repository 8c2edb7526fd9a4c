import itertools
import json
import os
import shutil
import tempfile
import unittest

import numpy as np

from tests.helpers import make_shapes, requires_detectron2


@requires_detectron2
class TestPseudoLabelsOnOtherImages(unittest.TestCase):
    """The Open Images + Conceptual Captions layout: ground truth on one image folder, pseudo labels
    on the images of a caption-only dataset in another."""

    def setUp(self):
        import cv2
        import pycocotools.mask as mask_util

        from xpseudo.config import load_config
        from xpseudo.data.metadata_files import metadata_file
        from xpseudo.data.ovis_datasets import register_ovis_dataset

        self.tmp = tempfile.TemporaryDirectory()
        shapes = os.path.join(self.tmp.name, "shapes")
        make_shapes(shapes, num_train=10, num_val=1, image_size=64)
        split, vocabulary = metadata_file("shapes_split.json"), metadata_file("shapes_vocabulary.json")
        register_ovis_dataset("_test_oi_gt", image_root=os.path.join(shapes, "images", "train"), split_file=split,
                              vocabulary_file=vocabulary, instances_json=os.path.join(shapes, "annotations", "instances_train_base.json"), replace=True)
        cc_images = os.path.join(self.tmp.name, "cc", "images")
        os.makedirs(cc_images)
        images = []
        for i, name in enumerate(sorted(os.listdir(os.path.join(shapes, "images", "train")))[:3]):
            shutil.copy(os.path.join(shapes, "images", "train", name), os.path.join(cc_images, f"cc{i}.png"))
            images.append({"id": i + 1, "file_name": f"cc{i}.png", "height": 64, "width": 64})
        captions = os.path.join(self.tmp.name, "cc", "captions.json")
        with open(captions, "w") as f:
            json.dump({"images": images, "annotations": [{"id": im["id"], "image_id": im["id"], "caption": "a star"} for im in images]}, f)
        register_ovis_dataset("_test_cc", image_root=cc_images, split_file=split, vocabulary_file=vocabulary,
                              captions_json=captions, replace=True)
        mask = np.zeros((64, 64), np.uint8, order="F")
        mask[10:30, 12:40] = 1
        rle = mask_util.encode(mask)
        star = [c["id"] for c in json.load(open(vocabulary)) if c["name"] == "star"][0]
        annotations = [
            {"id": k + 1, "image_id": image_id, "category_id": star, "segmentation": {"size": [64, 64], "counts": rle["counts"].decode()},
             "bbox": [12.0, 10.0, 28.0, 20.0], "area": 560, "iscrowd": 0, "score": 0.7, "word": "star"}
            for k, image_id in enumerate((1, 3))
        ]
        self.pl_dir = os.path.join(self.tmp.name, "pl")
        os.makedirs(self.pl_dir)
        with open(os.path.join(self.pl_dir, "pseudo_labels.json"), "w") as f:
            json.dump({"images": [images[0], images[2]], "annotations": annotations,
                       "categories": json.load(open(vocabulary))}, f)
        with open(os.path.join(self.pl_dir, "provenance.json"), "w") as f:
            json.dump({"dataset": "_test_cc"}, f)
        self.cfg = load_config(os.path.join(os.path.dirname(__file__), "..", "configs", "shapes", "xpm_student_R18_FPN.yaml"),
                               ["DATASETS.TRAIN", "('_test_oi_gt',)", "XPM.PSEUDO_LABELS_FILE", os.path.join(self.pl_dir, "pseudo_labels.json"),
                                "XPM.PSEUDO_DATASET", "_test_oi_pl", "SEED", "3"])
        self.cc_images = cc_images

    def tearDown(self):
        from detectron2.data import DatasetCatalog, MetadataCatalog

        for name in ("_test_oi_gt", "_test_cc", "_test_oi_pl"):
            if name in DatasetCatalog.list():
                DatasetCatalog.remove(name)
                MetadataCatalog.remove(name)
        self.tmp.cleanup()

    def test_merged_records_and_balanced_sampling(self):
        from detectron2.data import DatasetCatalog
        from detectron2.data.samplers import RepeatFactorTrainingSampler

        from xpseudo.data.pseudo_dataset import pseudo_labeled_dataset, student_repeat_factors, student_sampler, student_train_records

        self.assertEqual(pseudo_labeled_dataset(self.cfg), "_test_cc")
        records = student_train_records(self.cfg)
        num_gt = len(DatasetCatalog.get("_test_oi_gt"))
        pseudo_only = [r for r in records if r.get("pseudo_only")]
        self.assertEqual(len(records), num_gt + 2)
        self.assertEqual([r["file_name"] for r in pseudo_only], [os.path.join(self.cc_images, "cc0.png"), os.path.join(self.cc_images, "cc2.png")])
        self.assertEqual([[a["pseudo"] for a in r["annotations"]] for r in pseudo_only], [[True], [True]])
        self.assertTrue(all(not a["pseudo"] for r in records[:num_gt] for a in r["annotations"]))

        self.assertIsNone(student_sampler(self.cfg, records))  # factor 1: detectron2's own sampler
        factors = student_repeat_factors(records, -1.0)
        self.assertEqual(factors.tolist(), [1.0] * num_gt + [num_gt / 2] * 2)
        self.assertEqual(student_repeat_factors(records, 0.25).tolist(), [1.0] * num_gt + [0.25] * 2)
        self.cfg.XPM.PSEUDO_REPEAT_FACTOR = -1.0
        sampler = student_sampler(self.cfg, records)
        self.assertIsInstance(sampler, RepeatFactorTrainingSampler)
        drawn = list(itertools.islice(iter(sampler), 4000))
        share = sum(i >= num_gt for i in drawn) / len(drawn)
        self.assertAlmostEqual(share, 0.5, delta=0.05)

        from xpseudo.data.xpm_loader import build_xpm_train_loader

        self.cfg.SOLVER.IMS_PER_BATCH, self.cfg.DATALOADER.NUM_WORKERS = 4, 0
        batch = next(iter(build_xpm_train_loader(self.cfg)))
        self.assertEqual(len(batch), 4)
        self.assertTrue(all(hasattr(d["instances"], "gt_pseudo") for d in batch))

    def test_category_repeat_factors_are_multiplied(self):
        import torch
        from detectron2.data.samplers import RepeatFactorTrainingSampler

        from xpseudo.data.pseudo_dataset import student_repeat_factors, student_train_records

        records = student_train_records(self.cfg)
        category = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(records, 0.5)
        combined = student_repeat_factors(records, 0.5, category)
        expected = category * torch.tensor([0.5 if r.get("pseudo_only") else 1.0 for r in records])
        self.assertEqual(combined.tolist(), expected.tolist())

    def test_unregistered_provenance_dataset_is_an_error(self):
        from xpseudo.data.pseudo_dataset import pseudo_labeled_dataset
        from xpseudo.utils.io import InputError

        with open(os.path.join(self.pl_dir, "provenance.json"), "w") as f:
            json.dump({"dataset": "_nowhere"}, f)
        with self.assertRaisesRegex(InputError, "provenance.json: 'dataset' '_nowhere' is not registered here"):
            pseudo_labeled_dataset(self.cfg)
        self.cfg.XPM.PSEUDO_LABELED_DATASET = "_test_cc"
        self.assertEqual(pseudo_labeled_dataset(self.cfg), "_test_cc")


if __name__ == "__main__":
    unittest.main()
