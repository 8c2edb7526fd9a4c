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

        from xpseudo.data.pseudo_dataset import pseudo_labeled_dataset, student_repeat_factors, student_sampler, student_train_dataset

        self.assertEqual(pseudo_labeled_dataset(self.cfg), "_test_cc")
        dataset = student_train_dataset(self.cfg)
        records = [dataset[i] for i in range(len(dataset))]
        num_gt = len(DatasetCatalog.get("_test_oi_gt"))
        pseudo_only = [r for r in records if r.get("pseudo_only")]
        self.assertEqual(len(records), num_gt + 2)
        self.assertEqual([r["file_name"] for r in pseudo_only], [os.path.join(self.cc_images, "cc0.png"), os.path.join(self.cc_images, "cc2.png")])
        self.assertEqual([[a["pseudo"] for a in r["annotations"]] for r in pseudo_only], [[True], [True]])
        self.assertTrue(all(not a["pseudo"] for r in records[:num_gt] for a in r["annotations"]))

        self.assertIsNone(student_sampler(self.cfg, dataset))  # factor 1: detectron2's own sampler
        flags = dataset.pseudo_only_flags()
        self.assertEqual(flags.tolist(), [bool(r.get("pseudo_only")) for r in records])
        factors = student_repeat_factors(flags, -1.0)
        self.assertEqual(factors.tolist(), [1.0] * num_gt + [num_gt / 2] * 2)
        self.assertEqual(student_repeat_factors(flags, 0.25).tolist(), [1.0] * num_gt + [0.25] * 2)
        self.cfg.XPM.PSEUDO_REPEAT_FACTOR = -1.0
        sampler = student_sampler(self.cfg, dataset)
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

        from xpseudo.data.pseudo_dataset import student_repeat_factors, student_train_dataset

        dataset = student_train_dataset(self.cfg)
        records = [dataset[i] for i in range(len(dataset))]
        category = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(records, 0.5)
        self.assertEqual(RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(dataset.category_view(), 0.5).tolist(), category.tolist())
        combined = student_repeat_factors(dataset.pseudo_only_flags(), 0.5, category)
        expected = category * torch.tensor([0.5 if r.get("pseudo_only") else 1.0 for r in records])
        self.assertEqual(combined.tolist(), expected.tolist())

    def test_same_records_and_batches_as_loading_the_whole_file(self):
        """Pseudo labels on the ground-truth images themselves (the COCO layout), in a file laid out
        unlike ours (pretty-printed, annotations first, image ids descending): the index-backed
        dataset gives detectron2's load_coco_json records merged by file name, and the same batches."""
        import torch
        from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_train_loader, get_detection_dataset_dicts
        from detectron2.data.samplers import RepeatFactorTrainingSampler

        from xpseudo.data.ovis_datasets import load_ovis_dicts
        from xpseudo.data.pseudo_dataset import PseudoAwareDatasetMapper, student_repeat_factors, student_sampler, student_train_dataset
        from xpseudo.data.xpm_loader import build_xpm_train_loader

        gt_meta = MetadataCatalog.get("_test_oi_gt")
        gt_json = json.load(open(gt_meta.json_file))
        images = sorted(gt_json["images"], key=lambda im: -im["id"])[:4]
        pseudo = json.load(open(os.path.join(self.pl_dir, "pseudo_labels.json")))
        template = pseudo["annotations"][0]
        annotations = [dict(template, id=100 + k, image_id=im["id"], category_id=gt_json["categories"][k % 3]["id"],
                            segmentation=dict(template["segmentation"], size=[im["height"], im["width"]]))
                       for k, im in enumerate(images + images[:2])]
        path = os.path.join(self.pl_dir, "on_gt.json")
        with open(path, "w") as f:
            json.dump({"annotations": annotations, "images": images, "categories": pseudo["categories"]}, f, indent=2)
        self.cfg.merge_from_list(["XPM.PSEUDO_LABELS_FILE", path, "XPM.PSEUDO_LABELED_DATASET", "_test_oi_gt",
                                  "DATALOADER.SAMPLER_TRAIN", "RepeatFactorTrainingSampler", "DATALOADER.REPEAT_THRESHOLD", "0.3",
                                  "SOLVER.IMS_PER_BATCH", "3", "DATALOADER.NUM_WORKERS", "0"])

        gt = get_detection_dataset_dicts(["_test_oi_gt"], filter_empty=False)
        by_name = {r["file_name"]: {**r, "annotations": [dict(a, pseudo=False) for a in r["annotations"]]} for r in gt}
        for record in load_ovis_dicts(path, None, gt_meta.image_root, gt_meta.thing_dataset_id_to_contiguous_id):
            by_name[record["file_name"]]["annotations"] += [dict(a, pseudo=True) for a in record["annotations"]]
        expected = list(by_name.values())

        dataset = student_train_dataset(self.cfg)
        self.assertEqual([dataset[i] for i in range(len(dataset))], expected)
        self.assertEqual(sum(a["pseudo"] for r in expected for a in r["annotations"]), 6)
        loaded = load_ovis_dicts(path, None, gt_meta.image_root, gt_meta.thing_dataset_id_to_contiguous_id)
        self.assertEqual(DatasetCatalog.get("_test_oi_pl"), [dict(r, annotations=[dict(a, pseudo=True) for a in r["annotations"]]) for r in loaded])

        def batches(loader):
            torch.manual_seed(0)
            np.random.seed(0)
            out = []
            for batch in itertools.islice(loader, 4):
                out.append([(d["file_name"], d["image"].sum().item(), d["instances"].gt_classes.tolist(), d["instances"].gt_pseudo.tolist(),
                             d["instances"].gt_masks.tensor.sum().item()) for d in batch])
            return out

        factors = student_repeat_factors([False] * len(expected), 1.0, RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(expected, 0.3))
        reference = build_detection_train_loader(self.cfg, dataset=expected, mapper=PseudoAwareDatasetMapper(self.cfg, True),
                                                 sampler=RepeatFactorTrainingSampler(factors, seed=3))
        self.assertIsInstance(student_sampler(self.cfg, dataset), RepeatFactorTrainingSampler)
        self.assertEqual(batches(build_xpm_train_loader(self.cfg)), batches(reference))

    def test_unregistered_provenance_dataset_is_an_error(self):
        from xpseudo.data.pseudo_dataset import pseudo_labeled_dataset
        from xpseudo.utils.io import InputError

        with open(os.path.join(self.pl_dir, "provenance.json"), "w") as f:
            json.dump({"dataset": "_nowhere"}, f)
        with self.assertRaisesRegex(InputError, "provenance.json: 'dataset' '_nowhere' is not registered here"):
            pseudo_labeled_dataset(self.cfg)
        self.cfg.XPM.PSEUDO_LABELED_DATASET = "_test_cc"
        self.assertEqual(pseudo_labeled_dataset(self.cfg), "_test_cc")


@requires_detectron2
class TestScalableDataPieces(unittest.TestCase):
    def test_vectorized_sampler_gives_detectron2s_indices(self):
        import torch
        from detectron2.data.samplers import RepeatFactorTrainingSampler

        from xpseudo.data.scaling import VectorizedRepeatFactorSampler

        factors = torch.tensor([1.0, 0.25, 2.5, 0.0, 1.75, 0.01] * 50)
        for seed in (0, 5):
            ours = list(itertools.islice(iter(VectorizedRepeatFactorSampler(factors, seed=seed)), 3000))
            theirs = list(itertools.islice(iter(RepeatFactorTrainingSampler(factors, seed=seed)), 3000))
            self.assertEqual(ours, theirs)

    def test_map_with_retry_replaces_dropped_items(self):
        from xpseudo.data.scaling import MapWithRetry

        mapped = MapWithRetry(list(range(10)), lambda x: None if x in (3, 4) else x * 10)
        self.assertEqual([mapped[i] for i in (0, 9, 5)], [0, 90, 50])
        retried = [mapped[3] for _ in range(20)] + [mapped[4] for _ in range(20)]
        self.assertTrue(all(v is not None and v // 10 not in (3, 4) for v in retried))
        self.assertEqual(mapped._dropped, {3, 4})
        with self.assertRaisesRegex(RuntimeError, "dropped every item"):
            MapWithRetry([1, 2], lambda x: None)[0]


if __name__ == "__main__":
    unittest.main()
