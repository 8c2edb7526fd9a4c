import json
import os
import tempfile
import unittest
from unittest import mock

import cv2
import numpy as np

from tests.helpers import HAS_DETECTRON2, REPO, SHAPES, make_shapes, requires_detectron2, run_script, write_shape_embeddings

if HAS_DETECTRON2:
    import torch
    from detectron2.config import get_cfg
    from detectron2.data import DatasetCatalog
    from detectron2.modeling import build_model
    from detectron2.structures import Boxes

    import xpseudo.modeling  # noqa: F401
    from xpseudo.config import add_xpseudo_config
    from xpseudo.data.builtin import register_all_builtin
    from xpseudo.pseudo.generate import generate_shard
    from xpseudo.pseudo.labeler import PseudoLabeler
    from xpseudo.pseudo.selection import SelectionConfig
    from xpseudo.pseudo.shards import iter_shard, merge_shards, shard_path

CONFIG = os.path.join(REPO, "configs/shapes/xpm_teacher_R18_FPN.yaml")


@requires_detectron2
class TestGeneratePseudoLabels(unittest.TestCase):
    """A random-init teacher on a tiny shapes set: the labels are meaningless, the plumbing is not."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        root = cls.tmp.name
        make_shapes(os.path.join(root, "shapes"), num_train=14, num_val=2, image_size=96)
        # one unreadable image and one image whose captions name nothing
        with open(os.path.join(root, "shapes/images/train/000003.png"), "wb") as f:
            f.write(b"not a png")
        path = os.path.join(root, "shapes/annotations/captions_train.json")
        with open(path) as f:
            captions = json.load(f)
        for ann in captions["annotations"]:
            if ann["image_id"] == 5:
                ann["caption"] = "Nothing to see here."
        with open(path, "w") as f:
            json.dump(captions, f)
        register_all_builtin(root)
        cls.embeddings = write_shape_embeddings(os.path.join(root, "emb.npy"))
        cls.opts = ["MODEL.XPM.TEXT_EMBEDDINGS", cls.embeddings, "MODEL.XPM.EMBEDDING_DIM", "32", "DATALOADER.NUM_WORKERS", "0"]
        cls.cfg = get_cfg()
        add_xpseudo_config(cls.cfg)
        cls.cfg.merge_from_file(CONFIG)
        cls.cfg.merge_from_list(cls.opts)
        torch.manual_seed(0)
        model = build_model(cls.cfg)
        cls.weights = os.path.join(root, "teacher.pth")
        torch.save({"model": model.state_dict()}, cls.weights)
        cls.cfg.MODEL.WEIGHTS = cls.weights
        cls.labeler = PseudoLabeler.from_config(cls.cfg, model, "shapes_train_captions")
        cls.records = DatasetCatalog.get("shapes_train_captions")
        cls.env = {"DETECTRON2_DATASETS": root}

    @classmethod
    def tearDownClass(cls):
        register_all_builtin()
        cls.tmp.cleanup()

    def run_tool(self, *args, check=True):
        return run_script("tools/generate_pseudo_labels.py", "--config-file", CONFIG, *args, "MODEL.WEIGHTS", self.weights,
                          *self.opts, env=self.env, check=check)

    def load(self, directory):
        with open(os.path.join(directory, "pseudo_labels.json")) as f:
            return json.load(f)

    def test_labeler_output_follows_the_caption_words(self):
        record = self.records[0]
        classes = self.labeler.caption_labels(record["captions"]).classes
        self.assertTrue(classes)
        image = torch.as_tensor(np.ascontiguousarray(np.random.default_rng(0).integers(0, 255, (96, 96, 3)).transpose(2, 0, 1)))
        out = self.labeler([{"image": image.float(), "height": 120, "width": 100, "word_classes": classes}])[0]
        self.assertEqual(len(out), len(classes))  # XPM default: one region per word, no threshold
        self.assertEqual(out.pred_classes.tolist(), classes)
        self.assertEqual(out.word_index.tolist(), list(range(len(classes))))
        self.assertEqual(tuple(out.pred_masks.shape[1:]), (120, 100))
        self.assertEqual(out.pred_masks.dtype, torch.bool)
        self.assertTrue(bool(((out.scores > 0) & (out.scores < 1)).all()))

    def test_refined_boxes_are_the_teachers_box_transform_of_the_picked_proposals(self):
        from detectron2.structures import Boxes

        record = self.records[0]
        classes = self.labeler.caption_labels(record["captions"]).classes
        image = torch.as_tensor(np.ascontiguousarray(np.random.default_rng(1).integers(0, 255, (96, 96, 3)).transpose(2, 0, 1))).float()
        inputs = [{"image": image, "height": 96, "width": 96, "word_classes": classes}]
        self.assertTrue(self.labeler.refine_boxes)  # the default, as the authors' release
        refined = self.labeler(inputs)[0]
        self.labeler.refine_boxes = False
        try:
            raw = self.labeler(inputs)[0]
        finally:
            self.labeler.refine_boxes = True
        self.assertEqual(raw.pred_classes.tolist(), refined.pred_classes.tolist())  # the same picks
        model = self.labeler.model
        model.eval()
        with torch.no_grad():
            features = model.backbone(model.preprocess_image(inputs).tensor)
            _, deltas = model.roi_heads.region_embeddings_and_deltas(features, [Boxes(raw.pred_boxes.tensor)])
            expected = Boxes(model.roi_heads.box_predictor.box2box_transform.apply_deltas(deltas, raw.pred_boxes.tensor))
        expected.clip((96, 96))
        self.assertTrue(torch.allclose(refined.pred_boxes.tensor, expected.tensor, atol=1e-4))
        self.assertFalse(torch.allclose(refined.pred_boxes.tensor, raw.pred_boxes.tensor))

    def test_unnormalised_regions_let_a_large_norm_region_win_the_pick(self):
        """The authors' pick (XPM.PSEUDO_LABELS.NORMALIZE_REGIONS False): <projected region,
        normalised word>. Region 0 is nearly the word's direction with norm 1, region 1 is at 45
        degrees with norm 4.2: the cosine picks region 0 (S = 0.995), the dot product region 1 (S = 3)."""
        model = self.labeler.model
        record = self.records[0]
        classes = self.labeler.caption_labels(record["captions"]).classes[:1]
        image = torch.as_tensor(np.ascontiguousarray(np.random.default_rng(2).integers(0, 255, (96, 96, 3)).transpose(2, 0, 1))).float()
        word = model.roi_heads.box_predictor.class_embeddings[classes[0]]
        across = torch.randn(word.shape[0], generator=torch.Generator().manual_seed(0))
        across = torch.nn.functional.normalize(across - (across @ word) * word, dim=0)  # orthogonal to the word
        original = model.roi_heads.region_embeddings_and_deltas

        def constructed(features, boxes, normalize=True):
            embeddings, deltas = original(features, boxes, normalize)
            raw = (0.01 * across).repeat(embeddings.shape[0], 1)
            raw[0], raw[1] = word + 0.1 * across, 3 * word + 3 * across
            return (torch.nn.functional.normalize(raw, dim=-1) if normalize else raw), deltas

        picks = {}
        for normalize in (True, False):
            labeler = PseudoLabeler(model, self.labeler.vocabulary, list(range(len(self.labeler.vocabulary))),
                                    selection=SelectionConfig(temperature=1.0), refine_boxes=False, score="similarity",
                                    normalize_regions=normalize)
            with mock.patch.object(model.roi_heads, "region_embeddings_and_deltas", constructed):
                picks[normalize] = labeler([{"image": image, "height": 96, "width": 96, "word_classes": classes}])[0]
            self.assertEqual(labeler.settings()["normalize_regions"], normalize)
        self.assertAlmostEqual(float(picks[True].scores[0]), float(torch.sigmoid(torch.tensor(1 / 1.01**0.5))), places=5)
        self.assertAlmostEqual(float(picks[False].scores[0]), float(torch.sigmoid(torch.tensor(3.0))), places=5)
        self.assertFalse(torch.equal(picks[True].pred_boxes.tensor, picks[False].pred_boxes.tensor))
        with self.assertRaisesRegex(ValueError, "NORMALIZE_REGIONS False needs SCORE similarity"):
            PseudoLabeler(model, self.labeler.vocabulary, [0], score="classifier", normalize_regions=False)
        self.labeler.model.set_vocabulary(self.labeler.vocabulary)

    def test_annotated_images_only_keeps_the_captioned_images_with_an_annotation(self):
        """XPM.PSEUDO_LABELS.IMAGES "annotated" (the authors' base-annotated images), matched by file name."""
        from xpseudo.pseudo.generate import images_to_label

        name = "test_some_annotated"
        # images 1 and 2 annotated (2 under another folder and id), 4 listed without annotations
        DatasetCatalog.register(name, lambda: [{"file_name": "/x/000001.png", "image_id": 1, "annotations": [{"category_id": 0}]},
                                               {"file_name": "/y/000002.png", "image_id": 90, "annotations": [{"category_id": 1}]},
                                               {"file_name": "/x/000004.png", "image_id": 4, "annotations": []}])
        try:
            kept = images_to_label(self.records, "annotated", [name], "shapes_train_captions")
            self.assertEqual([os.path.basename(r["file_name"]) for r in kept], ["000001.png", "000002.png"])
            self.assertIs(images_to_label(self.records, "all", [name], "shapes_train_captions"), self.records)
            with self.assertRaisesRegex(ValueError, "IMAGES 'annotated' needs"):
                images_to_label(self.records, "annotated", [], "shapes_train_captions")
            with self.assertRaisesRegex(ValueError, "XPM.PSEUDO_LABELS.IMAGES must be one of"):
                images_to_label(self.records, "base", [name], "shapes_train_captions")
        finally:
            DatasetCatalog.remove(name)

    def test_uncertain_band_is_the_pasted_probability_between_its_bounds(self):
        from detectron2.layers.mask_ops import paste_masks_in_image
        from detectron2.structures import Instances

        record = self.records[0]
        classes = self.labeler.caption_labels(record["captions"]).classes
        image = torch.as_tensor(np.ascontiguousarray(np.random.default_rng(2).integers(0, 255, (96, 96, 3)).transpose(2, 0, 1))).float()
        inputs = [{"image": image, "height": 96, "width": 96, "word_classes": classes}]
        self.labeler.uncertain_band = (0.3, 0.7)
        try:
            picked = self.labeler(inputs)[0]
        finally:
            self.labeler.uncertain_band = ()
        self.assertFalse(self.labeler(inputs)[0].has("uncertain_masks"))  # not asked: not made
        model = self.labeler.model
        model.eval()
        with torch.no_grad():
            features = model.backbone(model.preprocess_image(inputs).tensor)
            given = Instances((96, 96), pred_boxes=picked.pred_boxes, pred_classes=picked.pred_classes)
            probabilities = model.roi_heads.forward_with_given_boxes(features, [given])[0].pred_masks[:, 0]
        # threshold -1: the probability pasted as uint8 p * 255, rounded down
        soft = paste_masks_in_image(probabilities, picked.pred_boxes, (96, 96), threshold=-1).float() / 255
        expected = (soft >= 0.3) & (soft <= 0.7)
        self.assertTrue(torch.equal(picked.uncertain_masks, expected))
        self.assertTrue(picked.uncertain_masks.any())
        self.assertFalse((picked.uncertain_masks & (soft > 0.7)).any())

    def test_uncertain_band_written_checked_and_counted_in_the_settings(self):
        out = os.path.join(self.tmp.name, "band")
        self.run_tool("--output", out, "XPM.PSEUDO_LABELS.UNCERTAIN_BAND", "(0.3, 0.7)")
        labels = self.load(out)
        self.assertTrue(labels["annotations"])
        for ann in labels["annotations"]:
            band = ann["uncertain_segmentation"]
            self.assertEqual(band["size"], ann["segmentation"]["size"])
        with open(os.path.join(out, "provenance.json")) as f:
            self.assertEqual(json.load(f)["selection"]["uncertain_band"], [0.3, 0.7])
        # the student's check refuses a band of another size, naming the file and the entry
        from xpseudo.pseudo.index_from_json import build_index_from_json
        from xpseudo.utils.io import InputError

        labels["annotations"][0]["uncertain_segmentation"]["size"] = [1, 1]
        bad = os.path.join(out, "bad.json")
        with open(bad, "w") as f:
            json.dump(labels, f)
        with self.assertRaisesRegex(InputError, "uncertain_segmentation") as caught:
            build_index_from_json(bad, os.path.join(out, "bad.index"))
        self.assertIn("bad.json", str(caught.exception))
        with self.assertRaisesRegex(ValueError, "UNCERTAIN_BAND"):
            PseudoLabeler(self.labeler.model, self.labeler.vocabulary, [0], uncertain_band=(0.7, 0.3))

    def test_sharded_equals_single_and_the_file_evaluates(self):
        one, three = os.path.join(self.tmp.name, "one"), os.path.join(self.tmp.name, "three")
        result = self.run_tool("--output", one)
        self.assertIn("1 unreadable", result.stdout)
        for index in range(3):
            self.run_tool("--output", three, "--num-shards", "3", "--shard-index", str(index))
        self.assertFalse(os.path.exists(os.path.join(three, "pseudo_labels.json")))
        run_script("tools/generate_pseudo_labels.py", "--output", three, "--merge", env=self.env)
        a, b = self.load(one), self.load(three)
        self.assertEqual(a["annotations"], b["annotations"])
        self.assertEqual(a["images"], b["images"])
        self.assertEqual([c["name"] for c in a["categories"]], SHAPES)
        ids = [im["id"] for im in a["images"]]
        self.assertNotIn(3, ids)  # unreadable
        self.assertNotIn(5, ids)  # captions name nothing
        first = a["annotations"][0]
        self.assertEqual(set(first), {"id", "image_id", "category_id", "segmentation", "bbox", "area", "iscrowd", "score", "word"})
        self.assertEqual(a["images"][0]["file_name"], f"{a['images'][0]['id']:06d}.png")  # relative to the image folder
        with open(os.path.join(one, "provenance.json")) as f:
            provenance = json.load(f)
        self.assertEqual(provenance["counts"]["unreadable"], 1)
        self.assertEqual(provenance["counts"]["no_match"], 1)
        # a random teacher's masks can be empty: those images are "unlabeled" and left out
        self.assertEqual(provenance["counts"]["labeled"], len(ids))
        self.assertEqual(provenance["counts"]["labeled"] + provenance["counts"]["unlabeled"], 12)
        self.assertEqual(provenance["counts"]["annotations"], len(a["annotations"]))
        self.assertEqual(len(provenance["teacher_sha256"]), 64)
        # the pseudo-label file evaluates against the full ground truth as it is
        gt = os.path.join(self.tmp.name, "shapes/annotations/instances_train_all.json")
        result = run_script("tools/evaluate_ovis.py", "--gt", gt, "--dt", os.path.join(one, "pseudo_labels.json"),
                            "--split", os.path.join(self.tmp.name, "shapes/split.json"), "--json-out", os.path.join(one, "eval.json"))
        with open(os.path.join(one, "eval.json")) as f:
            self.assertIn("AP50_novel", json.load(f)["segm"])
        vis = os.path.join(one, "vis")
        result = run_script("tools/visualize_pseudo_labels.py", "--pseudo", os.path.join(one, "pseudo_labels.json"),
                            "--image-root", os.path.join(self.tmp.name, "shapes/images/train"), "--output", vis, "--num", "2", "--scale", "2")
        self.assertIn("wrote 2 images", result.stdout)
        drawn = cv2.imread(os.path.join(vis, a["images"][0]["file_name"]))
        self.assertEqual(drawn.shape, (192, 192, 3))
        # a rerun finds everything finished and rewrites the same merge
        self.run_tool("--output", one)
        self.assertEqual(self.load(one), a)

    def test_interrupted_shard_resumes(self):
        reference, killed = os.path.join(self.tmp.name, "ref"), os.path.join(self.tmp.name, "killed")
        self.cfg.XPM.PSEUDO_LABELS.IMS_PER_BATCH = 2
        for index in range(2):
            generate_shard(self.cfg, self.labeler, "shapes_train_captions", reference, 2, index, self.records)
        merge_shards(reference)
        calls = {"n": 0}
        real = PseudoLabeler.__call__

        def dies_on_third_batch(labeler, inputs):
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt  # what a kill looks like to Python
            return real(labeler, inputs)

        with mock.patch.object(PseudoLabeler, "__call__", dies_on_third_batch), self.assertRaises(KeyboardInterrupt):
            generate_shard(self.cfg, self.labeler, "shapes_train_captions", killed, 2, 0, self.records)
        partial = shard_path(killed, 0, 2) + ".partial"
        written = [x["image"]["id"] for x in iter_shard(partial) if "image" in x]
        self.assertEqual(written, [1, 2, 3, 4])  # two batches of two
        for index in range(2):
            generate_shard(self.cfg, self.labeler, "shapes_train_captions", killed, 2, index, self.records)
        merge_shards(killed)
        self.assertEqual(self.load(killed)["annotations"], self.load(reference)["annotations"])
        self.assertEqual(self.load(killed)["images"], self.load(reference)["images"])

    def test_box_weak_labels_are_the_teachers_masks_in_the_given_boxes(self):
        from detectron2.modeling.postprocessing import detector_postprocess
        from detectron2.structures import Boxes, Instances

        labeler = PseudoLabeler.from_config(self.cfg, self.labeler.model, "shapes_train_boxes")
        record = next(r for r in DatasetCatalog.get("shapes_train_boxes") if len(r["annotations"]) >= 2)
        labels = labeler.image_labels(record, "boxes")
        classes, names, boxes = labels.classes, labels.names, labels.boxes
        self.assertEqual(names, [SHAPES[c] for c in classes])
        self.assertTrue(set(names) <= {"star", "cross", "crescent"})  # the file names novel objects only
        x, y, w, h = record["annotations"][0]["bbox"]
        self.assertEqual(boxes[0], [x, y, x + w, y + h])
        image = torch.as_tensor(np.ascontiguousarray(np.random.default_rng(2).integers(0, 255, (96, 96, 3)).transpose(2, 0, 1))).float()
        inputs = [{"image": image, "height": 96, "width": 96, "word_classes": classes, "weak_boxes": torch.tensor(boxes)},
                  {"image": image, "height": 96, "width": 96, "word_classes": classes[:1]}]  # a caption image in the same batch
        out = labeler(inputs)
        model = labeler.model
        model.eval()
        with torch.no_grad():
            features = model.backbone(model.preprocess_image(inputs[:1]).tensor)
            given = Instances((96, 96), pred_boxes=Boxes(torch.tensor(boxes)), pred_classes=torch.tensor(classes))
            expected = detector_postprocess(model.roi_heads.forward_with_given_boxes(features, [given])[0], 96, 96)
        self.assertTrue(torch.equal(out[0].pred_boxes.tensor, torch.tensor(boxes, dtype=torch.float32)))
        self.assertTrue(torch.equal(out[0].pred_masks, expected.pred_masks))
        self.assertEqual(out[0].scores.tolist(), [1.0] * len(classes))
        self.assertEqual(out[0].pred_classes.tolist(), classes)
        self.assertEqual(len(out[1]), 1)  # the caption image still picks a proposal
        # the whole tool: one mask per novel box of every readable image, provenance naming the source
        directory = os.path.join(self.tmp.name, "boxes")
        self.run_tool("--dataset", "shapes_train_boxes", "--output", directory)
        labels = self.load(directory)
        with open(os.path.join(directory, "provenance.json")) as f:
            provenance = json.load(f)
        self.assertEqual(provenance["source"], "boxes")
        with open(os.path.join(self.tmp.name, "shapes/annotations/boxes_train.json")) as f:
            readable = [a for a in json.load(f)["annotations"] if a["image_id"] != 3]  # image 3 is unreadable
        self.assertEqual(provenance["counts"]["annotations"] + provenance["counts"]["empty_masks"], len(readable))
        self.assertEqual({a["word"] for a in labels["annotations"]} - {"star", "cross", "crescent"}, set())
        self.assertEqual({a["score"] for a in labels["annotations"]}, {1.0})

    def random_image(self, seed):
        return torch.as_tensor(np.ascontiguousarray(np.random.default_rng(seed).integers(0, 255, (96, 96, 3)).transpose(2, 0, 1))).float()

    def proposals_and_embeddings(self, labeler, inputs):
        model = labeler.model
        model.eval()
        with torch.no_grad():
            images = model.preprocess_image(inputs)
            features = model.backbone(images.tensor)
            proposals, _ = model.proposal_generator(images, features, None)
            boxes = proposals[0].proposal_boxes
            embeddings, _ = model.roi_heads.region_embeddings_and_deltas(features, [boxes])
        return boxes.tensor, embeddings

    def test_a_point_picks_the_best_proposal_holding_it(self):
        labeler = PseudoLabeler.from_config(self.cfg, self.labeler.model, "shapes_train_points")
        labeler.refine_boxes = False  # compare with the raw proposals
        record = next(r for r in DatasetCatalog.get("shapes_train_points") if len(r["annotations"]) >= 2)
        labels = labeler.image_labels(record, "points")
        self.assertEqual(labels.points, [[a["point_coords"][0][0] + 0.5, a["point_coords"][0][1] + 0.5] for a in record["annotations"]])
        inputs = [{"image": self.random_image(3), "height": 96, "width": 96, "word_classes": labels.classes, "weak_points": torch.tensor(labels.points)}]
        out = labeler(inputs)[0]
        boxes, embeddings = self.proposals_and_embeddings(labeler, inputs)
        expected, found = [], []
        for n, ((x, y), c) in enumerate(zip(labels.points, labels.classes)):
            def holds(box, px, py):
                return bool(box[0] <= px <= box[2] and box[1] <= py <= box[3])
            holding = [r for r in range(len(boxes)) if holds(boxes[r], x, y)]
            alone = [r for r in holding if not any(holds(boxes[r], *p) for m, p in enumerate(labels.points) if m != n)]
            candidates = alone or holding
            if not candidates:  # a point inside no proposal labels nothing
                continue
            cosine = (embeddings[candidates] @ labeler.word_embeddings[c]).tolist()
            expected.append(candidates[cosine.index(max(cosine))])
            found.append(n)
        self.assertTrue(found)
        self.assertEqual(out.word_index.tolist(), found)
        self.assertTrue(torch.equal(out.pred_boxes.tensor, boxes[expected].clamp(0, 96)))
        self.assertEqual(out.pred_classes.tolist(), [labels.classes[n] for n in found])

    def test_a_scribble_picks_the_proposal_whose_mask_covers_it(self):
        from xpseudo.pseudo.selection import scribble_points

        labeler = PseudoLabeler.from_config(self.cfg, self.labeler.model, "shapes_train_scribbles")
        labeler.refine_boxes = False  # compare with the raw proposals
        record = next(r for r in DatasetCatalog.get("shapes_train_scribbles") if len(r["annotations"]) >= 2)
        labels = labeler.image_labels(record, "scribbles")
        self.assertEqual(labels.scribbles, [a["scribble"] for a in record["annotations"]])
        inputs = [{"image": self.random_image(3), "height": 96, "width": 96, "word_classes": labels.classes,
                   "weak_scribbles": [torch.tensor(s) for s in labels.scribbles]}]
        boxes, embeddings = self.proposals_and_embeddings(labeler, inputs)
        model = labeler.model
        with torch.no_grad():  # every proposal's mask probabilities on its box's grid
            features = model.backbone(model.preprocess_image(inputs).tensor)
            pooled = model.roi_heads.mask_pooler([features[f] for f in model.roi_heads.mask_in_features], [Boxes(boxes)])
            probabilities = torch.sigmoid(model.roi_heads.mask_head.layers(pooled)[:, 0])
        # an untrained teacher's masks hover around one value: threshold at their median, so some cover a scribble
        threshold = labeler.mask_threshold = float(probabilities.median())
        out = labeler(inputs)[0]
        side = probabilities.shape[-1]

        def read(r, x, y):  # the M x M grid over box r read bilinearly at image point (x, y), zero outside the grid
            px = float((x - boxes[r, 0]) / (boxes[r, 2] - boxes[r, 0]) * side - 0.5)
            py = float((y - boxes[r, 1]) / (boxes[r, 3] - boxes[r, 1]) * side - 0.5)
            x0, y0 = int(np.floor(px)), int(np.floor(py))
            value = 0.0
            for gx, wx in ((x0, 1 - (px - x0)), (x0 + 1, px - x0)):
                for gy, wy in ((y0, 1 - (py - y0)), (y0 + 1, py - y0)):
                    if 0 <= gx < side and 0 <= gy < side:
                        value += wx * wy * float(probabilities[r, gy, gx])
            return value

        points = [scribble_points(torch.tensor(s)) for s in labels.scribbles]
        expected, found = [], []
        for n, c in enumerate(labels.classes):
            def covered(r, pts):
                return torch.tensor([float(boxes[r, 0] <= x <= boxes[r, 2] and boxes[r, 1] <= y <= boxes[r, 3] and read(r, x, y) > threshold)
                                     for x, y in pts.tolist()])
            others = torch.cat([p for m, p in enumerate(points) if m != n])
            quality = [covered(r, points[n]).mean().item() - covered(r, others).mean().item() if covered(r, points[n]).any() else -1e9
                       for r in range(len(boxes))]
            if max(quality) == -1e9:
                continue
            found.append(n)
            expected.append(quality.index(max(quality)))
        self.assertTrue(found)
        self.assertEqual(out.word_index.tolist(), found)
        self.assertTrue(torch.equal(out.pred_boxes.tensor, boxes[expected].clamp(0, 96)))

    def test_two_in_a_caption_gives_two_regions_that_do_not_overlap(self):
        labeler = PseudoLabeler.from_config(self.cfg, self.labeler.model, "shapes_train_captions")
        labeler.counts, labeler.refine_boxes = True, False
        labels = labeler.caption_labels(["Two stars and a red disk.", "A star and a disk."])
        self.assertEqual((labels.classes, labels.names, labels.counts), ([SHAPES.index("star"), SHAPES.index("circle")], ["stars", "disk"], [2, 1]))
        inputs = [{"image": self.random_image(4), "height": 96, "width": 96, "word_classes": labels.classes, "word_counts": labels.counts}]
        out = labeler(inputs)[0]
        self.assertEqual(out.word_index.tolist(), [0, 0, 1])
        stars = out.pred_boxes[out.word_index == 0]
        from detectron2.structures import pairwise_iou

        self.assertLessEqual(float(pairwise_iou(stars[:1], stars[1:])), labeler.selection.pick_iou)
        boxes, embeddings = self.proposals_and_embeddings(labeler, inputs)
        self.assertTrue(torch.equal(stars.tensor[0], boxes[int((embeddings @ labeler.word_embeddings[labels.classes[0]]).argmax())].clamp(0, 96)))

    def test_exclusive_assignment_gives_each_pick_its_own_object_across_words(self):
        from detectron2.structures import pairwise_iou

        labeler = PseudoLabeler.from_config(self.cfg, self.labeler.model, "shapes_train_captions")
        labeler.refine_boxes, labeler.score = False, "classifier"
        labeler.selection = SelectionConfig(pick_iou=0.3, assignment="exclusive")
        classes, counts = [SHAPES.index("star"), SHAPES.index("circle"), SHAPES.index("cross")], [2, 1, 2]
        inputs = [{"image": self.random_image(6), "height": 96, "width": 96, "word_classes": classes, "word_counts": counts}]
        out = labeler(inputs)[0]
        boxes, embeddings = self.proposals_and_embeddings(labeler, inputs)
        with torch.no_grad():
            _, confidences = labeler._class_scores(embeddings, torch.as_tensor(classes))
        # the greedy by hand: best confidence first over every (region, word); a region is free when
        # it overlaps no earlier pick by more than 0.3
        iou = pairwise_iou(Boxes(boxes), Boxes(boxes))
        pairs = sorted(((float(confidences[r, w]), -r, -w) for r in range(len(boxes)) for w in range(3)), reverse=True)
        taken, left = [], list(counts)
        for _, r, w in pairs:
            r, w = -r, -w
            if left[w] and all(float(iou[r, t]) <= 0.3 for t, _ in taken):
                taken.append((r, w))
                left[w] -= 1
        expected = sorted(taken, key=lambda p: p[1])  # by word, each word's best first
        self.assertEqual(len(expected), 5)
        self.assertEqual(out.word_index.tolist(), [w for _, w in expected])
        self.assertTrue(torch.equal(out.pred_boxes.tensor, boxes[[r for r, _ in expected]].clamp(0, 96)))
        overlaps = pairwise_iou(out.pred_boxes, out.pred_boxes)
        self.assertLessEqual(float((overlaps - torch.eye(5)).max()), 0.3)
        self.assertEqual(labeler.settings()["assignment"], "exclusive")

    def test_the_restricted_classifier_confidence_is_a_probability_min_score_can_use(self):
        labeler = PseudoLabeler.from_config(self.cfg, self.labeler.model, "shapes_train_captions")
        labeler.score = "classifier"
        classes = [SHAPES.index("star"), SHAPES.index("circle")]
        inputs = [{"image": self.random_image(5), "height": 96, "width": 96, "word_classes": classes}]
        out = labeler(inputs)[0]
        _, embeddings = self.proposals_and_embeddings(labeler, inputs)
        predictor = labeler.model.roi_heads.box_predictor
        # the named classes compete with the base classes the teacher knows, and background
        competing = classes + [SHAPES.index(c) for c in ("square", "triangle", "hexagon", "ring")]
        self.assertEqual(labeler.known_classes, sorted(SHAPES.index(c) for c in ("circle", "square", "triangle", "hexagon", "ring")))
        classifier = torch.cat([labeler.word_embeddings[competing], torch.nn.functional.normalize(predictor.background_embedding, dim=0)[None]])
        probabilities = torch.softmax(embeddings @ classifier.t() / predictor.temperature, dim=1)[:, :2]
        self.assertTrue(torch.allclose(out.scores, probabilities.max(dim=0).values))
        labeler.selection = type(labeler.selection)(min_score=float(out.scores.max()) + 1e-6)
        self.assertEqual(len(labeler(inputs)[0]), 0)

    def test_tags_points_and_scribbles_through_the_tool(self):
        for kind in ("tags", "points", "scribbles"):
            directory = os.path.join(self.tmp.name, kind)
            self.run_tool("--dataset", f"shapes_train_{kind}", "--output", directory)
            labels = self.load(directory)
            with open(os.path.join(directory, "provenance.json")) as f:
                provenance = json.load(f)
            self.assertEqual(provenance["source"], kind)
            with open(os.path.join(self.tmp.name, f"shapes/annotations/{kind}_train.json")) as f:
                data = json.load(f)
            if kind == "tags":  # one region per tag of every readable image
                wanted = sum(len(im["pos_category_ids"]) for im in data["images"] if im["id"] != 3)
                self.assertEqual(provenance["counts"]["skipped_labels"], 0)
            else:  # one region per point, or a counted skip
                wanted = sum(1 for a in data["annotations"] if a["image_id"] != 3)
                wanted -= provenance["counts"]["skipped_labels"]
            self.assertEqual(provenance["counts"]["annotations"] + provenance["counts"]["empty_masks"], wanted)
            self.assertEqual({a["word"] for a in labels["annotations"]} - {"star", "cross", "crescent"}, set())

    def test_an_object_with_no_clicked_point_is_a_counted_skip(self):
        labeler = PseudoLabeler.from_config(self.cfg, self.labeler.model, "shapes_train_points")
        record = {"annotations": [{"category_id": SHAPES.index("star"), "point_coords": [[3, 4]], "point_labels": [0]},
                                  {"category_id": SHAPES.index("cross"), "point_coords": [[0, 0], [5, 6]], "point_labels": [0, 1]},
                                  {"category_id": SHAPES.index("circle"), "point_coords": [[1, 1]], "point_labels": [1]}]}
        labels = labeler.image_labels(record, "points")
        # the star has no point inside it; the circle is a base class, not wanted here
        wanted = SHAPES.index("circle") in labeler.wanted
        self.assertEqual(labels.skipped, 1)
        self.assertEqual(labels.points, [[5.5, 6.5]] + ([[1.5, 1.5]] if wanted else []))

    def test_malformed_weak_labels_are_errors_naming_file_and_entry(self):
        self.assert_spoiled_files_are_refused("boxes", {
            "box outside": (lambda d: d["annotations"][1].update(bbox=[90.0, 10.0, 20.0, 5.0]), r"annotations\[1\] \(id \d+\): bbox \[90.0, 10.0, 20.0, 5.0\] leaves the 96x96 image"),
            "unknown class": (lambda d: d["annotations"][0].update(category_id=99), r"annotations\[0\] \(id \d+\): category_id 99 is not a class"),
            "image twice": (lambda d: d["images"].append(dict(d["images"][4])), r"images\[14\]: image id 5 is listed twice"),
        })
        self.assert_spoiled_files_are_refused("points", {
            "point outside": (lambda d: d["annotations"][2].update(point_coords=[[96, 120]]),
                              r"annotations\[2\] \(id \d+\): point \[96, 120\] lies outside the 96x96 image"),
        })
        self.assert_spoiled_files_are_refused("scribbles", {
            "one vertex": (lambda d: d["annotations"][1].update(scribble=[[3.0, 4.0]]), r"annotations\[1\] \(id \d+\): scribble must be a polyline of two or more"),
            "nan": (lambda d: d["annotations"][1].update(scribble=[[3.0, 4.0], [float("nan"), 2.0]]), r"annotations\[1\] \(id \d+\): scribble must be"),
            "outside": (lambda d: d["annotations"][2].update(scribble=[[3.0, 4.0], [99.5, 5.0]]),
                        r"annotations\[2\] \(id \d+\): scribble vertex \[99.5, 5.0\] lies outside the 96x96 image"),
            "missing": (lambda d: d["annotations"][0].pop("scribble"), r"annotations\[0\] \(id \d+\) lacks \['scribble'\]"),
        })

    def assert_spoiled_files_are_refused(self, kind, cases):
        """Each case spoils a copy of the shapes weak-label file of ``kind``; loading it must raise
        an InputError naming the copy and the entry."""
        from xpseudo.data.ovis_datasets import register_ovis_dataset
        from xpseudo.pseudo.generate import labeling_records
        from xpseudo.utils.io import InputError

        root = os.path.join(self.tmp.name, "shapes")
        with open(os.path.join(root, f"annotations/{kind}_train.json")) as f:
            good = json.load(f)
        for name, (spoil, message) in cases.items():
            data = json.loads(json.dumps(good))
            spoil(data)
            path = os.path.join(self.tmp.name, f"bad_{kind}_{name.replace(' ', '_')}.json")
            with open(path, "w") as f:
                json.dump(data, f)
            register_ovis_dataset(f"test_bad_{kind}", image_root=os.path.join(root, "images/train"), instances_json=path,
                                  split_file=os.path.join(root, "split.json"), weak_labels=kind, replace=True)
            with self.assertRaisesRegex(InputError, "^" + path.replace(".", "\\.") + ": " + message, msg=name):
                labeling_records(f"test_bad_{kind}")
        DatasetCatalog.remove(f"test_bad_{kind}")

    def test_file_names_are_written_relative_to_the_image_folder(self):
        from xpseudo.pseudo.generate import image_entry

        record = {"image_id": 1, "height": 8, "width": 9}
        for root, file_name, written in (
            ("datasets/shapes/images/train", "datasets/shapes/images/train/000001.png", "000001.png"),  # $DETECTRON2_DATASETS unset
            ("/data/images", "/data/images/a/1.png", os.path.join("a", "1.png")),
            ("/data/images", "/elsewhere/1.png", "/elsewhere/1.png"),  # outside the folder: kept whole
            ("", "x/1.png", "x/1.png"),
        ):
            self.assertEqual(image_entry({**record, "file_name": file_name}, root)["file_name"], written)

    def test_bad_arguments_fail_before_any_work(self):
        out = os.path.join(self.tmp.name, "bad")
        result = self.run_tool("--output", out, "--num-shards", "20", check=False)
        self.assertEqual(result.returncode, 2)
        self.assertIn("20 shards for 14 images", result.stderr)
        self.assertFalse(os.path.exists(os.path.join(out, "shards")))
        result = run_script("tools/generate_pseudo_labels.py", "--output", out, "--merge", check=False)
        self.assertIn("no finished shard", result.stderr)


if __name__ == "__main__":
    unittest.main()
