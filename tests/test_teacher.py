import glob
import json
import os
import tempfile
import unittest

import cv2
import numpy as np

from tests.helpers import (HAS_DETECTRON2, REPO, SHAPES, RegisteredShapes, make_shapes, requires_detectron2, run_script,
                           write_shape_embeddings)

if HAS_DETECTRON2:
    import torch
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model
    from detectron2.structures import BitMasks, Boxes, Instances
    from detectron2.utils.events import EventStorage

    import xpseudo.modeling  # noqa: F401
    from xpseudo.config import add_xpseudo_config
    from xpseudo.text import Vocabulary, save_text_embeddings
    from xpseudo.utils.io import InputError



def teacher_cfg(embeddings_file, **overrides):
    cfg = get_cfg()
    add_xpseudo_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs/shapes/xpm_teacher_R18_FPN.yaml"))
    cfg.MODEL.XPM.TEXT_EMBEDDINGS = embeddings_file
    cfg.MODEL.XPM.EMBEDDING_DIM = 32
    for key, value in overrides.items():
        node = cfg
        *path, last = key.split(".")
        for p in path:
            node = getattr(node, p)
        setattr(node, last, value)
    return cfg


def annotated_image(classes, size=96):
    instances = Instances((size, size))
    boxes = torch.tensor([[10.0 + 20 * i, 10.0, 30.0 + 20 * i, 40.0] for i in range(len(classes))]).reshape(-1, 4)
    masks = torch.zeros(len(classes), size, size, dtype=torch.bool)
    for i, b in enumerate(boxes.long()):
        masks[i, b[1] : b[3], b[0] : b[2]] = True
    instances.gt_boxes = Boxes(boxes)
    instances.gt_classes = torch.tensor(classes, dtype=torch.long)
    instances.gt_masks = BitMasks(masks)
    return {"image": torch.rand(3, size, size) * 255, "height": size, "width": size, "instances": instances}


@requires_detectron2
class TestXPMTeacher(RegisteredShapes, unittest.TestCase):
    shapes_size = {"num_train": 12, "num_val": 6}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        torch.manual_seed(0)
        cls.model = build_model(teacher_cfg(cls.embeddings))

    def test_trains_on_base_classes_and_grounds_on_all(self):
        self.assertEqual(self.model.train_vocabulary.names, SHAPES[:5])
        self.assertEqual(self.model.word_vocabulary.names, SHAPES)
        self.assertEqual(tuple(self.model.word_embeddings.shape), (8, 32))
        self.assertEqual(self.model.roi_heads.num_classes, 5)

    def test_forward_backward_mixing_annotated_caption_and_empty_images(self):
        self.model.train()
        batch = [
            annotated_image([0, 3]),
            annotated_image([]),  # annotated, no instance
            {"image": torch.rand(3, 96, 96) * 255, "height": 96, "width": 96, "caption_words": [5, 1]},
            {"image": torch.rand(3, 96, 96) * 255, "height": 96, "width": 96, "caption_words": [6]},
        ]
        with EventStorage():
            losses = self.model(batch)
        self.assertEqual(set(losses), {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg", "loss_mask", "loss_grounding"})
        self.assertTrue(all(torch.isfinite(v) for v in losses.values()))
        # Two caption images: a 2-way contrastive loss, positive (its math is tested in test_grounding_loss).
        self.assertGreater(losses["loss_grounding"].item(), 0)
        self.model.zero_grad()
        sum(losses.values()).backward()
        projection = self.model.roi_heads.box_predictor.projection.weight.grad
        self.assertGreater(projection.abs().sum().item(), 0)
        self.assertGreater(self.model.backbone.bottom_up.stem.conv1.weight.grad.abs().sum().item(), 0)

    def test_annotation_of_a_class_not_trained_on_is_refused(self):
        self.model.train()
        with EventStorage(), self.assertRaisesRegex(ValueError, "class id 6 is not among the training classes"):
            self.model([annotated_image([6])])

    def test_eval_with_vocabularies_of_other_sizes(self):
        self.model.eval()
        image = {"image": torch.rand(3, 96, 96) * 255, "height": 80, "width": 80}
        try:
            for names in (SHAPES[5:], SHAPES, ["star"]):
                self.model.set_vocabulary(Vocabulary.from_names(names))
                self.assertEqual(self.model.roi_heads.box_predictor.class_embeddings.shape[0], len(names))
                with torch.no_grad():
                    instances = self.model([image])[0]["instances"]
                self.assertEqual(instances.image_size, (80, 80))
                self.assertTrue(bool((instances.pred_classes < len(names)).all()))
                self.assertEqual(tuple(instances.pred_masks.shape[1:]), (80, 80))
        finally:
            self.model.set_vocabulary(self.model.train_vocabulary)

    def test_checkpoint_holds_no_vocabulary(self):
        state = self.model.state_dict()
        self.assertFalse(any("class_embeddings" in k or "word_embeddings" in k or "train_class_map" in k for k in state))
        other = build_model(teacher_cfg(self.embeddings, **{"MODEL.XPM.TRAIN_CLASSES": "all"}))
        other.load_state_dict(state)  # strict: the same learnable state whatever the vocabulary
        self.assertEqual(other.roi_heads.num_classes, 8)

    def test_embedding_file_without_the_dataset_classes(self):
        path = os.path.join(self.tmp.name, "other.npy")
        save_text_embeddings(path, np.ones((2, 32), np.float32), Vocabulary.from_names(["cat", "dog"]), model="test")
        with self.assertRaisesRegex(InputError, r"other\.npy: no text embedding for 'circle', 'square', 'triangle', 'hexagon', 'ring' \(5 of the 5 classes of the training classes\)"):
            build_model(teacher_cfg(path))

    def test_embedding_dimension_must_match(self):
        with self.assertRaisesRegex(InputError, "have dimension 32, the model expects MODEL.XPM.EMBEDDING_DIM = 64"):
            build_model(teacher_cfg(self.embeddings, **{"MODEL.XPM.EMBEDDING_DIM": 64}))

    def test_grounding_on_all_caption_words(self):
        from xpseudo.data.xpm_loader import build_xpm_train_loader

        # Plain words have no row in the 32-d embedding file, so this model computes all its text
        # embeddings (random-init RN50 text tower, cached under the test's folder).
        cfg = teacher_cfg("", **{
            "MODEL.XPM.EMBEDDING_DIM": 1024, "MODEL.XPM.EMBEDDING_CACHE_DIR": os.path.join(self.tmp.name, "cache"),
            "MODEL.XPM.GROUNDING.WORDS": "all", "MODEL.XPM.GROUNDING.MIN_WORD_COUNT": 2,
            "SOLVER.IMS_PER_BATCH": 1, "XPM.CAPTION_IMS_PER_BATCH": 2, "DATALOADER.NUM_WORKERS": 0,
        })
        torch.manual_seed(0)
        model = build_model(cfg)
        table = model.word_vocabulary
        self.assertEqual(table.names[:8], SHAPES)
        plain = table.names[8:]
        self.assertIn("background", plain)  # "... on a black background."
        self.assertIn("black", plain)
        self.assertFalse({"a", "and", "on", "image", "two"} & set(plain))
        self.assertEqual(tuple(model.word_embeddings.shape), (len(table), 1024))
        batch = next(iter(build_xpm_train_loader(cfg)))
        captioned = [x for x in batch if "caption_words" in x]
        self.assertEqual(len(captioned), 2)
        for x in captioned:
            self.assertLess(x["caption_words"][0], 8)  # every grounded image names a class, first
            self.assertLess(max(x["caption_words"]), len(table))
        model.train()
        with EventStorage():
            losses = model(batch)
        self.assertTrue(torch.isfinite(losses["loss_grounding"]))
        losses["loss_grounding"].backward()
        self.assertGreater(model.roi_heads.box_predictor.projection.weight.grad.abs().sum().item(), 0)

    def test_caption_dataset_naming_no_class(self):
        from detectron2.data import DatasetCatalog, MetadataCatalog

        from xpseudo.data import register_ovis_dataset
        from xpseudo.data.xpm_loader import build_xpm_train_loader

        captions = os.path.join(self.tmp.name, "nothing.json")
        with open(captions, "w") as f:
            json.dump({"images": [{"id": 1, "file_name": "000001.png"}], "annotations": [{"image_id": 1, "caption": "an empty table"}]}, f)
        register_ovis_dataset("_test_no_match", image_root=os.path.join(self.tmp.name, "shapes/images/train"),
                              split_file=os.path.join(self.tmp.name, "shapes/split.json"), captions_json=captions,
                              vocabulary_file=os.path.join(self.tmp.name, "shapes/vocabulary.json"))
        try:
            cfg = teacher_cfg(self.embeddings, **{"XPM.CAPTION_DATASETS": ("_test_no_match",)})
            with self.assertRaisesRegex(InputError, "nothing.json: no caption names any of the 8 vocabulary classes"):
                build_xpm_train_loader(cfg)
        finally:
            DatasetCatalog.remove("_test_no_match")
            MetadataCatalog.remove("_test_no_match")


@requires_detectron2
class TestConfigs(unittest.TestCase):
    def test_every_config_parses(self):
        paths = sorted(glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True))
        self.assertGreaterEqual(len(paths), 4)
        for path in paths:
            cfg = get_cfg()
            add_xpseudo_config(cfg)
            cfg.merge_from_file(path)
            self.assertIn(cfg.MODEL.META_ARCHITECTURE, ("XPMGroundingPretrainer", "XPMTeacher", "XPMStudent"), path)


@requires_detectron2
class TestTrainNet(unittest.TestCase):
    def test_train_then_eval_only_on_a_constrained_dataset(self):
        with tempfile.TemporaryDirectory() as tmp:
            make_shapes(os.path.join(tmp, "shapes"), num_train=16, num_val=6, image_size=96)
            env = {"DETECTRON2_DATASETS": tmp}
            emb = write_shape_embeddings(os.path.join(tmp, "emb.npy"))
            common = ["MODEL.XPM.TEXT_EMBEDDINGS", emb, "MODEL.XPM.EMBEDDING_DIM", "32", "DATALOADER.NUM_WORKERS", "0"]
            out = os.path.join(tmp, "t")
            run_script("tools/train_net.py", "--config-file", "configs/shapes/xpm_teacher_R18_FPN.yaml", "OUTPUT_DIR", out,
                       "SOLVER.MAX_ITER", "3", "SOLVER.CHECKPOINT_PERIOD", "100", *common, env=env)
            for name in ("config.yaml", "log.txt", "metrics.json", "last_checkpoint", "model_final.pth"):
                self.assertTrue(os.path.exists(os.path.join(out, name)), name)
            with open(os.path.join(out, "inference", "shapes_val", "results.json")) as f:
                results = json.load(f)
            for task in ("bbox", "segm"):
                self.assertIn("AP50_novel", results[task])
                self.assertIn("AP50_base", results[task])
            run_script("tools/train_net.py", "--config-file", "configs/shapes/xpm_teacher_R18_FPN.yaml", "--eval-only",
                       "MODEL.WEIGHTS", os.path.join(out, "model_final.pth"), "OUTPUT_DIR", os.path.join(tmp, "e"),
                       "DATASETS.TEST", "('shapes_val_novel',)", *common, env=env)
            with open(os.path.join(tmp, "e", "inference", "shapes_val_novel", "results.json")) as f:
                novel = json.load(f)
            self.assertIn("AP50_novel", novel["segm"])
            self.assertNotIn("AP50_base", novel["segm"])
            self.assertEqual(sorted(k for k in novel["segm"] if k.startswith("AP-")), ["AP-crescent", "AP-cross", "AP-star"])
            images = sorted(glob.glob(os.path.join(tmp, "shapes", "images", "val", "*.png")))[:2]
            result = run_script("tools/demo.py", "--config-file", "configs/shapes/xpm_teacher_R18_FPN.yaml", "--input", *images,
                                "--output", os.path.join(tmp, "demo"), "--vocabulary", "star, circle", "--confidence-threshold", "0",
                                "--opts", "MODEL.WEIGHTS", os.path.join(out, "model_final.pth"), *common, env=env)
            self.assertEqual(result.stdout.count("instances ->"), 2)
            drawn = cv2.imread(os.path.join(tmp, "demo", os.path.basename(images[0])))
            self.assertEqual(drawn.shape, (96, 96, 3))
            folder = os.path.join(tmp, "shapes", "images", "val")  # a folder works as the input too
            result = run_script("tools/demo.py", "--config-file", "configs/shapes/xpm_teacher_R18_FPN.yaml", "--input", folder,
                                "--output", os.path.join(tmp, "demo_folder"), "--vocabulary", "star,circle",
                                "--opts", "MODEL.WEIGHTS", os.path.join(out, "model_final.pth"), *common, env=env)
            self.assertEqual(result.stdout.count("instances ->"), len(os.listdir(folder)))
