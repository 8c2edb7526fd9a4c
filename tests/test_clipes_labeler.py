"""projects/CLIPES's labeler and tool on a tiny shapes set with a random-init CLIP ViT (and a
random-init teacher): plumbing, shapes and the file format; the labels themselves mean nothing."""
import json
import os
import tempfile
import unittest

import numpy as np

from tests.helpers import HAS_DETECTRON2, REPO, make_shapes, requires_detectron2, run_script, write_shape_embeddings
from tests.test_clipes_maps import write_tiny_vit_config

if HAS_DETECTRON2:
    import pycocotools.mask as mask_util
    import torch
    from detectron2.data import DatasetCatalog
    from detectron2.modeling import build_model

    import xpseudo.modeling  # noqa: F401
    from clipes.clip_model import build_clip
    from clipes.config import add_clipes_config
    from clipes.labeler import ClipesLabeler
    from xpseudo.config import load_config
    from xpseudo.data.builtin import register_all_builtin

CONFIG = os.path.join(REPO, "projects/CLIPES/configs/clipes_shapes.yaml")
TOOL = "projects/CLIPES/generate_clipes_labels.py"


@requires_detectron2
class TestClipesLabeler(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        root = cls.tmp.name
        make_shapes(os.path.join(root, "shapes"), num_train=6, num_val=2, image_size=96)
        register_all_builtin(root)
        embeddings = write_shape_embeddings(os.path.join(root, "emb.npy"))
        vit = write_tiny_vit_config(root)
        cls.opts = ["CLIPES.MODEL", "xpseudo-test-tiny-vit", "CLIPES.PRETRAINED", "none", "CLIPES.MODEL_CONFIG_FILE", vit,
                    "CLIPES.MIN_AREA", "4", "MODEL.XPM.TEXT_EMBEDDINGS", embeddings, "MODEL.XPM.EMBEDDING_DIM", "32",
                    "DATALOADER.NUM_WORKERS", "0"]
        cls.cfg = load_config(CONFIG, cls.opts, add_config=add_clipes_config)
        torch.manual_seed(0)
        cls.teacher = build_model(cls.cfg)
        cls.teacher.eval()
        cls.weights = os.path.join(root, "teacher.pth")
        torch.save({"model": cls.teacher.state_dict()}, cls.weights)
        clip, tokenizer = build_clip("xpseudo-test-tiny-vit", "none", vit)
        cls.labeler = ClipesLabeler.from_config(cls.cfg, clip, tokenizer, "shapes_train_captions")
        cls.records = DatasetCatalog.get("shapes_train_captions")
        cls.env = {"DETECTRON2_DATASETS": root}

    @classmethod
    def tearDownClass(cls):
        register_all_builtin()
        cls.tmp.cleanup()

    def an_input(self, classes, height=96, width=80):
        image = np.random.default_rng(0).integers(0, 255, (3, 64, 48)).astype(np.float32)
        return {"image": torch.as_tensor(image), "height": height, "width": width, "word_classes": classes}

    def test_class_maps_have_the_image_size_and_zeros_for_classes_not_offered(self):
        maps = self.labeler.class_maps(self.an_input([5, 7, 5]))
        self.assertEqual(tuple(maps.shape), (8, 96, 80))  # every vocabulary class, the original size
        offered = [5, 7]
        for c in range(8):
            if c in offered:
                self.assertAlmostEqual(maps[c].max().item(), 1.0, places=5)  # max-normalised
            else:
                self.assertEqual(maps[c].abs().sum().item(), 0.0)
        self.assertEqual(self.labeler.class_maps(self.an_input([])).abs().sum().item(), 0.0)

    def test_instances_are_connected_regions_or_teacher_masks(self):
        x = self.an_input([5, 7])
        self.labeler.map_threshold, self.labeler.min_area = 0.3, 1
        try:
            out = self.labeler([x])[0]
            self.assertGreater(len(out), 0)
            self.assertEqual(tuple(out.pred_masks.shape[1:]), (96, 80))
            self.assertTrue(set(out.pred_classes.tolist()) <= {5, 7})
            self.assertEqual(out.word_index.tolist(), [[5, 7].index(c) for c in out.pred_classes.tolist()])
            for mask, box in zip(out.pred_masks, out.pred_boxes.tensor):  # boxes are the masks' boxes
                ys, xs = torch.nonzero(mask, as_tuple=True)
                self.assertEqual(box.tolist(), [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1])
            maps = self.labeler.class_maps(x)
            for c, mask, score in zip(out.pred_classes.tolist(), out.pred_masks, out.scores):
                self.assertAlmostEqual(score.item(), maps[c][mask].mean().item(), places=5)
            # with a teacher every mask is one of the teacher's masks
            self.labeler.teacher, self.labeler.min_iou = self.teacher, 0.0
            teacher_masks = self.labeler.teacher_masks(x)
            snapped = self.labeler([x])[0]
            self.assertGreater(len(snapped), 0)
            for mask in snapped.pred_masks:
                self.assertTrue(any(torch.equal(mask, t) for t in teacher_masks))
        finally:
            self.labeler.teacher, self.labeler.min_iou = None, 0.2
            self.labeler.map_threshold, self.labeler.min_area = 0.5, 4

    def test_prompt_choice_takes_the_sharpest_template(self):
        labeler = self.labeler
        items = [self.an_input([5]), self.an_input([6, 7])]
        labeler.choose_prompt(items)
        sharpness = labeler.prompt_sharpness
        self.assertEqual(set(sharpness), set(labeler.prompts))
        self.assertEqual(labeler.template, max(labeler.prompts, key=lambda t: sharpness[t]))
        # by hand for the first template: the softmax mass on each image's own classes, averaged
        from clipes.clip_model import class_embeddings, phrase_embeddings

        t = labeler.prompts[0]
        texts = class_embeddings(labeler.clip, labeler.tokenizer, labeler.vocabulary, t)
        background = phrase_embeddings(labeler.clip, labeler.tokenizer, labeler.background_words, t)
        mass = [labeler.class_probabilities(x, texts, background)[sorted(set(x["word_classes"]))].sum().item() for x in items]
        self.assertAlmostEqual(sharpness[t], sum(mass) / 2, places=5)

    def test_the_tool_writes_a_valid_pseudo_label_file(self):
        out = os.path.join(self.tmp.name, "clipes")
        result = run_script(TOOL, "--config-file", CONFIG, "--dataset", "shapes_train_captions", "--output", out,
                            "CLIPES.MAP_THRESHOLD", "0.3", *self.opts, env=self.env)
        self.assertIn("pseudo masks", result.stdout)
        with open(os.path.join(out, "pseudo_labels.json")) as f:
            labels = json.load(f)
        with open(os.path.join(out, "provenance.json")) as f:
            provenance = json.load(f)
        self.assertEqual(provenance["labeler"], "clipes")
        self.assertIn(provenance["selection"]["prompt"], provenance["selection"]["prompt_sharpness"])
        self.assertFalse(provenance["selection"]["teacher"])
        self.assertTrue(labels["annotations"])
        novel = {c["id"] for c in labels["categories"] if c["name"] in ("star", "cross", "crescent")}
        for ann in labels["annotations"]:
            self.assertIn(ann["category_id"], novel)  # CLASSES novel
            self.assertEqual(int(mask_util.area({"size": ann["segmentation"]["size"], "counts": ann["segmentation"]["counts"].encode()})), ann["area"])
        self.assertTrue(os.path.isfile(os.path.join(out, "pseudo_labels.index")))  # checked as the student reads it
        gt = os.path.join(self.tmp.name, "shapes/annotations/instances_train_all.json")
        run_script("tools/evaluate_ovis.py", "--gt", gt, "--dt", os.path.join(out, "pseudo_labels.json"),
                   "--split", os.path.join(self.tmp.name, "shapes/split.json"), "--iou-type", "segm")
        # with the teacher's masks, through the same tool
        teacher_out = os.path.join(self.tmp.name, "clipes_teacher")
        run_script(TOOL, "--config-file", CONFIG, "--dataset", "shapes_train_captions", "--output", teacher_out,
                   "CLIPES.MIN_IOU", "0.0", "MODEL.WEIGHTS", self.weights, *self.opts, env=self.env)
        with open(os.path.join(teacher_out, "provenance.json")) as f:
            self.assertTrue(json.load(f)["selection"]["teacher"])

    def test_unusable_inputs_are_clear_errors(self):
        result = run_script(TOOL, "--config-file", CONFIG, "--dataset", "shapes_train_boxes", "--output", os.path.join(self.tmp.name, "x"),
                            *self.opts, env=self.env, check=False)
        self.assertEqual(result.returncode, 2)
        self.assertIn("class names", result.stderr)
        result = run_script(TOOL, "--config-file", CONFIG, "--output", os.path.join(self.tmp.name, "y"),
                            *self.opts, "MODEL.WEIGHTS", "/nonexistent.pth", env=self.env, check=False)
        self.assertEqual(result.returncode, 2)
        self.assertIn("/nonexistent.pth", result.stderr)


if __name__ == "__main__":
    unittest.main()
