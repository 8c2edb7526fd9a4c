"""DistributedDataParallel (without find_unused_parameters) needs a gradient for every trainable
parameter from every process at every step. These are the batches one process can get in a
multi-GPU run; after backward each must leave no trainable parameter without a gradient, and the
loss names must be the same whatever the batch (detectron2 averages losses across processes by
name)."""
import unittest

from tests.helpers import HAS_DETECTRON2, RegisteredShapes, requires_detectron2

if HAS_DETECTRON2:
    import torch
    from detectron2.modeling import build_model
    from detectron2.utils.events import EventStorage

    import xpseudo.modeling  # noqa: F401
    from xpseudo.engine.hooks import DropFrozenGradients
    from tests.test_student import image_with, student_cfg
    from tests.test_teacher import annotated_image, teacher_cfg

STUDENT_LOSSES = {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg", "loss_mask"}


def without_gradient(model):
    return [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]


@requires_detectron2
class TestEveryParameterInTheGraph(RegisteredShapes, unittest.TestCase):
    def step(self, model, batch, iteration=0):
        model.train()
        model.zero_grad(set_to_none=True)
        with EventStorage(iteration):
            losses = model(batch)
            sum(losses.values()).backward()
        return losses

    def test_student_batches(self):
        torch.manual_seed(0)
        batches = {
            "ground truth only": [image_with([0, 2], [False, False]), image_with([3], [False])],
            "pseudo only": [image_with([6, 7], [True, True])],
            "no instance at all": [image_with([], []), image_with([], [])],
            "mixed": [image_with([0, 6], [False, True]), image_with([], [])],
        }
        for options in ({}, {"MODEL.XPM.STUDENT.FREEZE_BACKBONE": True, "MODEL.XPM.STUDENT.FREEZE_RPN": True},
                        {"MODEL.XPM.STUDENT.NOISE_AWARE": False}, {"MODEL.XPM.STUDENT.WEIGHTING": "batch"},
                        {"MODEL.XPM.STUDENT.WEIGHT_MASK_LOSS": True}):
            model = build_model(student_cfg(self.embeddings, **options))
            for what, batch in batches.items():
                with self.subTest(options=options, batch=what):
                    losses = self.step(model, batch)
                    # a frozen RPN runs in eval mode: no RPN losses, on every process alike
                    expected = STUDENT_LOSSES - ({"loss_rpn_cls", "loss_rpn_loc"} if options.get("MODEL.XPM.STUDENT.FREEZE_RPN") else set())
                    self.assertEqual(set(losses), expected)
                    self.assertEqual(without_gradient(model), [])
                    self.assertTrue(all(torch.isfinite(v) for v in losses.values()))

    def test_student_after_the_sigma_freeze(self):
        model = build_model(student_cfg(self.embeddings, **{"MODEL.XPM.STUDENT.SIGMA_FREEZE_ITER": 5}))
        sigma = list(model.roi_heads.mask_head.sigma.parameters())
        hook = DropFrozenGradients(model)
        for iteration, frozen in ((4, False), (5, True), (9, True)):
            with self.subTest(iteration=iteration):
                self.step(model, [image_with([0, 6], [False, True])], iteration)
                self.assertEqual(without_gradient(model), [])
                self.assertEqual(all(torch.count_nonzero(p.grad) == 0 for p in sigma), frozen)
                with EventStorage(iteration):  # the hook runs inside training, at the same iteration
                    hook.after_backward()
                self.assertEqual(all(p.grad is None for p in sigma), frozen)
                self.assertEqual(without_gradient(model) == [], not frozen)

    def test_teacher_batch_without_caption_images(self):
        torch.manual_seed(0)
        model = build_model(teacher_cfg(self.embeddings))
        with_captions = self.step(model, [annotated_image([0, 3]), {"image": torch.rand(3, 96, 96) * 255, "height": 96,
                                                                    "width": 96, "caption_words": [0, 6]}])
        self.assertEqual(without_gradient(model), [])
        without = self.step(model, [annotated_image([0, 3]), annotated_image([])])
        self.assertEqual(set(without), set(with_captions))
        self.assertEqual(without["loss_grounding"].item(), 0.0)
        self.assertEqual(without_gradient(model), [])


if __name__ == "__main__":
    unittest.main()
