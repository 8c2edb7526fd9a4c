"""The student mask head's pseudo-mask losses and prototype contrast, against the loss functions
on hand-made instances, and the whole student with each option."""
import unittest.mock
import unittest

import numpy as np

from tests.helpers import HAS_DETECTRON2, RegisteredShapes, requires_detectron2

if HAS_DETECTRON2:
    import pycocotools.mask as mask_util
    import torch
    import torch.nn.functional as F
    from detectron2.config import get_cfg
    from detectron2.data import transforms as T
    from detectron2.layers import ShapeSpec
    from detectron2.modeling import build_model
    from detectron2.structures import BitMasks, Boxes, Instances
    from detectron2.utils.events import EventStorage

    import xpseudo.modeling  # noqa: F401
    from xpseudo.data.pseudo_dataset import PseudoAwareDatasetMapper
    from xpseudo.losses import (
        bce_mask_loss,
        confidence_guided_mask_loss,
        noise_aware_mask_loss,
        prototype_contrast_loss,
        response_scaling_mask_loss,
    )
    from xpseudo.modeling.noise_aware_mask_head import NoiseAwareMaskHead
    from tests.test_student import image_with, student_cfg

SIDE = 14  # the head's mask side for 7 x 7 pooled features; images of this size, whole-image boxes


def head(**kwargs):
    torch.manual_seed(0)
    return NoiseAwareMaskHead(ShapeSpec(channels=8, width=7, height=7), num_classes=1, conv_dims=[8, 8], **kwargs)


def instances(masks, classes, pseudo, uncertain=None):
    """Proposals covering the whole SIDE x SIDE image, so the cropped targets are the masks."""
    n = len(classes)
    x = Instances((SIDE, SIDE))
    x.proposal_boxes = Boxes(torch.tensor([[0.0, 0.0, SIDE, SIDE]] * n).reshape(-1, 4))
    x.gt_masks = BitMasks(torch.as_tensor(masks, dtype=torch.bool).reshape(n, SIDE, SIDE))
    x.gt_classes = torch.tensor(classes, dtype=torch.long)
    x.gt_pseudo = torch.tensor(pseudo, dtype=torch.bool)
    if uncertain is not None:
        x.gt_uncertain = BitMasks(torch.as_tensor(uncertain, dtype=torch.bool).reshape(n, SIDE, SIDE))
    return x


def random_masks(n, seed):
    return torch.rand(n, SIDE, SIDE, generator=torch.Generator().manual_seed(seed)) > 0.5


@requires_detectron2
class TestMaskHeadLosses(unittest.TestCase):
    def setUp(self):
        self.masks = random_masks(3, 1)
        self.band = random_masks(3, 2)
        self.features = torch.rand(3, 8, 7, 7, generator=torch.Generator().manual_seed(3))

    def loss_of(self, mask_head, with_band=True):
        x = instances(self.masks, [0, 4, 2], [False, True, True], self.band if with_band else None)
        with EventStorage():
            logits, log_variance, _ = mask_head.layers(self.features)
            return mask_head.loss(logits[:, 0], log_variance[:, 0], [x]), logits[:, 0].detach(), log_variance[:, 0].detach()

    def expected(self, per_pseudo, logits):
        gt = bce_mask_loss(logits[:1], self.masks[:1].float())
        return torch.cat([gt, per_pseudo]).mean()

    def test_each_loss_on_pseudo_instances_and_bce_on_ground_truth(self):
        targets = self.masks[1:].float()
        for name in ("bce", "confidence_guided", "response_scaling"):
            with self.subTest(name):
                loss, logits, _ = self.loss_of(head(mask_loss=name, response_scales=(0.5, 2.0)))
                pseudo = logits[1:]
                per_pseudo = {
                    "bce": bce_mask_loss(pseudo, targets),
                    "confidence_guided": confidence_guided_mask_loss(pseudo, targets, self.band[1:]),
                    "response_scaling": response_scaling_mask_loss(pseudo, targets, (0.5, 2.0)),
                }[name]
                self.assertTrue(torch.allclose(loss, self.expected(per_pseudo, logits), atol=1e-6))
        # the noise-aware loss with its noise drawn from the same seed
        mask_head = head(num_samples=4)
        torch.manual_seed(5)
        loss, logits, log_variance = self.loss_of(mask_head)
        torch.manual_seed(5)
        noise = torch.randn(4, 2, SIDE, SIDE)
        self.assertTrue(torch.allclose(loss, self.expected(noise_aware_mask_loss(logits[1:], log_variance[1:], targets, noise=noise), logits), atol=1e-6))

    def test_confidence_guided_needs_the_band_and_other_losses_do_not(self):
        with self.assertRaisesRegex(ValueError, "uncertain_segmentation"):
            self.loss_of(head(mask_loss="confidence_guided"), with_band=False)
        self.loss_of(head(mask_loss="response_scaling"), with_band=False)

    def test_unknown_or_contradicting_loss_is_an_error(self):
        with self.assertRaisesRegex(ValueError, "MASK_LOSS"):
            head(mask_loss="dice")
        with self.assertRaisesRegex(ValueError, "NOISE_AWARE False"):
            head(mask_loss="response_scaling", noise_aware=False)
        self.assertEqual(head(noise_aware=False).mask_loss, "bce")

    def test_prototype_contrast_against_the_loss_function_then_the_update(self):
        mask_head = head(prototype_weight=0.5, prototype_temperature=0.2, prototype_momentum=0.9, prototype_pixels=10 ** 6)
        mask_head.size_prototypes(5)  # classes 0-4, background 5
        bank = mask_head.prototypes
        self.assertEqual(tuple(bank.prototypes.shape), (6, 8))
        # prototypes where they would be after one step: every label seen
        bank.prototypes.copy_(F.normalize(torch.rand(6, 8, generator=torch.Generator().manual_seed(4)), dim=1))
        bank.initialized.fill_(True)
        before = bank.prototypes.clone()
        x = instances(self.masks, [0, 4, 2], [False, True, True], self.band)
        mask_head.train()
        with EventStorage():
            losses = mask_head(self.features, [x])
            _, _, pixels = mask_head.layers(self.features)
        flat = pixels.detach().permute(0, 2, 3, 1).reshape(-1, 8)
        labels = torch.where(self.masks, torch.tensor([0, 4, 2])[:, None, None], 5).flatten()
        usable = (~self.band).flatten()  # the pseudo masks' uncertain pixels take no part (gt has none here)
        usable[: SIDE * SIDE] = ~self.band[0].flatten()
        # with every pixel an anchor, the loss is the mean over all usable pixels
        expected = prototype_contrast_loss(flat[usable], labels[usable], before, torch.ones(6, dtype=torch.bool), 0.2)
        self.assertTrue(torch.allclose(losses["loss_prototype"], 0.5 * expected, atol=1e-5))
        for label in range(6):
            members = flat[usable][labels[usable] == label]
            if label in (1, 3):  # no pixel of these classes: unchanged
                self.assertEqual(len(members), 0)
                self.assertTrue(torch.equal(bank.prototypes[label], before[label]))
                continue
            mean = F.normalize(F.normalize(members, dim=1).mean(0), dim=0)
            self.assertTrue(torch.allclose(bank.prototypes[label], F.normalize(0.9 * before[label] + 0.1 * mean, dim=0), atol=1e-5))
        losses["loss_prototype"].backward()
        self.assertGreater(mask_head.deconv.weight.grad.abs().sum().item(), 0)
        self.assertIsNone(mask_head.predictor.weight.grad)  # the contrast trains the features, not the logits

    def test_prototypes_start_empty_so_the_first_step_has_no_contrast(self):
        mask_head = head(prototype_weight=1.0)
        mask_head.size_prototypes(5)
        mask_head.train()
        with EventStorage():
            first = mask_head(self.features, [instances(self.masks, [0, 4, 2], [False, True, True])])
            self.assertEqual(first["loss_prototype"].item(), 0.0)
            self.assertEqual(mask_head.prototypes.initialized.tolist(), [True, False, True, False, True, True])
            second = mask_head(self.features, [instances(self.masks, [0, 4, 2], [False, True, True])])
            self.assertGreater(second["loss_prototype"].item(), 0.0)
            empty = mask_head(self.features[:0], [instances(self.masks[:0], [], [])])  # no foreground RoI
            self.assertEqual(empty["loss_prototype"].item(), 0.0)


@requires_detectron2
class TestStudentWithEachOption(RegisteredShapes, unittest.TestCase):
    def batch(self, band=True):
        images = [image_with([0, 6, 5], [False, True, True]), image_with([], []), image_with([7, 2], [True, False])]
        if band:
            for x in images[::2]:  # the middle image has no instance
                masks = x["instances"].gt_masks.tensor
                edge = masks ^ torch.nn.functional.max_pool2d(masks[None].float(), 3, 1, 1)[0].bool()
                x["instances"].gt_uncertain = BitMasks(edge)
        return images

    def test_every_mask_loss_and_the_contrast_train(self):
        for overrides in ({"MODEL.XPM.STUDENT.MASK_LOSS": "bce"}, {"MODEL.XPM.STUDENT.MASK_LOSS": "confidence_guided"},
                          {"MODEL.XPM.STUDENT.MASK_LOSS": "response_scaling"}, {"MODEL.XPM.PROTOTYPE_CONTRAST.WEIGHT": 0.1}):
            with self.subTest(overrides):
                torch.manual_seed(0)
                model = build_model(student_cfg(self.embeddings, **overrides))
                model.train()
                contrast = "MODEL.XPM.PROTOTYPE_CONTRAST.WEIGHT" in overrides
                if contrast:  # 8 training classes and background
                    self.assertEqual(tuple(model.roi_heads.mask_head.prototypes.prototypes.shape), (9, 64))
                with EventStorage():
                    for _ in range(2):
                        losses = model(self.batch())
                        sum(losses.values()).backward()
                self.assertEqual("loss_prototype" in losses, contrast)
                self.assertTrue(all(torch.isfinite(v) for v in losses.values()))
                self.assertGreater(model.roi_heads.mask_head.predictor.weight.grad.abs().sum().item(), 0)

    def test_confidence_guided_on_labels_without_a_band_says_what_to_do(self):
        model = build_model(student_cfg(self.embeddings, **{"MODEL.XPM.STUDENT.MASK_LOSS": "confidence_guided"}))
        model.train()
        with EventStorage(), self.assertRaisesRegex(ValueError, "UNCERTAIN_BAND"):
            model(self.batch(band=False))


@requires_detectron2
class TestMapperKeepsTheUncertainBand(unittest.TestCase):
    def test_band_is_flipped_with_the_mask_and_ground_truth_gets_none(self):
        cfg = get_cfg()
        cfg.INPUT.MASK_FORMAT = "bitmask"
        mask = np.zeros((6, 8), dtype=np.uint8)
        mask[1:4, 0:3] = 1
        band = np.zeros((6, 8), dtype=np.uint8)
        band[1:4, 2] = 1

        def rle(m):
            r = mask_util.encode(np.asfortranarray(m))
            return {"size": r["size"], "counts": r["counts"].decode()}

        record = {"file_name": "unused.png", "height": 6, "width": 8, "image_id": 1, "annotations": [
            {"bbox": [0, 1, 3, 3], "bbox_mode": 1, "category_id": 0, "segmentation": rle(mask), "pseudo": False},
            {"bbox": [0, 1, 3, 3], "bbox_mode": 1, "category_id": 1, "segmentation": rle(mask), "pseudo": True, "uncertain_segmentation": rle(band)},
        ]}
        mapper = PseudoAwareDatasetMapper(cfg, is_train=True, augmentations=[T.RandomFlip(prob=1.0)],
                                          image_format="BGR", use_instance_mask=True, instance_mask_format="bitmask")
        image = np.zeros((6, 8, 3), dtype=np.uint8)
        with unittest.mock.patch("detectron2.data.detection_utils.read_image", return_value=image):
            out = mapper(dict(record))["instances"]
        self.assertEqual(out.gt_pseudo.tolist(), [False, True])
        self.assertTrue(torch.equal(out.gt_masks.tensor[1], torch.as_tensor(mask[:, ::-1].copy(), dtype=torch.bool)))
        self.assertTrue(torch.equal(out.gt_uncertain.tensor[1], torch.as_tensor(band[:, ::-1].copy(), dtype=torch.bool)))
        self.assertFalse(out.gt_uncertain.tensor[0].any())
        with unittest.mock.patch("detectron2.data.detection_utils.read_image", return_value=image):
            no_band = dict(record, annotations=[dict(a) for a in record["annotations"]])
            no_band["annotations"][1].pop("uncertain_segmentation")
            self.assertFalse(mapper(no_band)["instances"].has("gt_uncertain"))


if __name__ == "__main__":
    unittest.main()
