"""The background class weight of the classification loss (the authors' release: 0.2)."""
import unittest

from tests.helpers import HAS_DETECTRON2, requires_detectron2

if HAS_DETECTRON2:
    import torch
    from detectron2.layers import ShapeSpec
    from detectron2.modeling.box_regression import Box2BoxTransform
    from detectron2.structures import Boxes, Instances
    from detectron2.utils.events import EventStorage

    from xpseudo.modeling.open_vocab_predictor import OpenVocabOutputLayers


@requires_detectron2
class TestBackgroundWeight(unittest.TestCase):
    def predictor(self, background_weight, normalizer="class_weights"):
        torch.manual_seed(0)
        layers = OpenVocabOutputLayers(ShapeSpec(channels=6), embedding_dim=4, temperature=0.5, background_weight=background_weight,
                                       loss_normalizer=normalizer, box2box_transform=Box2BoxTransform((10.0, 10.0, 5.0, 5.0)))
        layers.set_class_embeddings(torch.randn(3, 4))  # classes 0-2, background 3
        return layers

    def test_loss_by_hand(self):
        scores = torch.tensor([[2.0, 0.5, -1.0, 0.0], [0.1, 0.2, 0.3, 1.5], [-0.5, 1.0, 0.0, 0.2], [0.0, 0.0, 3.0, 1.0]])
        gt = torch.tensor([0, 3, 1, 3])  # two foreground, two background proposals
        log_p = torch.log_softmax(scores, dim=1)[torch.arange(4), gt]
        weights = torch.tensor([1.0, 0.2, 1.0, 0.2])
        expected = -(weights * log_p).sum() / weights.sum()
        self.assertTrue(torch.allclose(self.predictor(0.2).classification_loss(scores, gt), expected))
        # weight 1 is detectron2's mean cross-entropy; proposal weights multiply in
        self.assertTrue(torch.allclose(self.predictor(1.0).classification_loss(scores, gt), torch.nn.functional.cross_entropy(scores, gt)))
        pw = torch.tensor([0.5, 1.0, 2.0, 1.0])
        self.assertTrue(torch.allclose(self.predictor(0.2).classification_loss(scores, gt, pw), -(weights * pw * log_p).sum() / weights.sum()))
        self.assertEqual(self.predictor(0.2).classification_loss(scores[:0], gt[:0]).item(), 0.0)

    def test_rois_normalizer_is_the_authors(self):
        """Divided by the RoI count: on 512 RoIs with 40 foreground and background weight 0.2 the
        weighted mean is 512 / (40 + 472 * 0.2) = 3.81 times the authors' loss; 1.95 with 200."""
        for foreground, ratio in ((40, 512 / 134.4), (200, 512 / 262.4)):
            scores = torch.randn(512, 4, generator=torch.Generator().manual_seed(foreground))
            gt = torch.full((512,), 3)
            gt[:foreground] = torch.arange(foreground) % 3
            ours, theirs = self.predictor(0.2).classification_loss(scores, gt), self.predictor(0.2, "rois").classification_loss(scores, gt)
            per_roi = torch.nn.functional.cross_entropy(scores, gt, reduction="none")
            weights = torch.where(gt == 3, 0.2, 1.0)
            self.assertAlmostEqual(float(theirs), float((per_roi * weights).sum() / 512), places=6)
            self.assertAlmostEqual(float(ours / theirs), ratio, places=4)
        self.assertAlmostEqual(512 / 134.4, 3.8095, places=4)
        gt = torch.tensor([0, 3, 1, 3])
        scores = torch.randn(4, 4)
        self.assertTrue(torch.allclose(self.predictor(1.0, "rois").classification_loss(scores, gt), self.predictor(1.0).classification_loss(scores, gt)))
        with self.assertRaisesRegex(ValueError, "CLS_LOSS_NORMALIZER"):
            self.predictor(1.0, "images")

    def test_losses_use_it(self):
        with EventStorage():
            self._losses_use_it()

    def _losses_use_it(self):
        features = torch.randn(4, 6)
        proposals = Instances((20, 20), proposal_boxes=Boxes(torch.tensor([[0, 0, 5, 5], [1, 1, 8, 8], [2, 2, 9, 9], [0, 0, 19, 19.0]])),
                              gt_boxes=Boxes(torch.tensor([[0, 0, 6, 6], [1, 1, 8, 8], [2, 2, 9, 9], [0, 0, 19, 19.0]])),
                              gt_classes=torch.tensor([0, 3, 1, 3]))
        for weight in (1.0, 0.2):
            predictor = self.predictor(weight)
            scores, deltas = predictor(features)
            losses = predictor.losses((scores, deltas), [proposals])
            self.assertTrue(torch.allclose(losses["loss_cls"], predictor.classification_loss(scores, proposals.gt_classes)))
        self.assertFalse(torch.allclose(self.predictor(0.2).losses(self.predictor(0.2)(features), [proposals])["loss_cls"],
                                        self.predictor(1.0).losses(self.predictor(1.0)(features), [proposals])["loss_cls"]))


if __name__ == "__main__":
    unittest.main()
