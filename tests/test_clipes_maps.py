"""projects/CLIPES's map math on a tiny random-init open_clip ViT (no detectron2): GradCAM, the
attention affinity refinement, regions; plumbing and exact shapes, since the weights are random."""
import json
import os
import tempfile
import unittest

import torch
import torch.nn.functional as F

from clipes import (
    attention_weights,
    build_clip,
    class_embeddings,
    class_regions,
    map_box,
    mask_iou,
    patch_affinity,
    refine_maps,
    snap_to_teacher,
    softmax_grad_cam,
    vit_pass,
)
from xpseudo.text.vocabulary import Vocabulary

# a 3-block ViT on 64 px images in 16 px patches (a 4 x 4 grid), and a 1-block text tower
TINY_VIT = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 3, "width": 48, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def write_tiny_vit_config(directory: str) -> str:
    """Registers as open_clip model "xpseudo-test-tiny-vit" (the file name)."""
    path = os.path.join(directory, "xpseudo-test-tiny-vit.json")
    with open(path, "w") as f:
        json.dump(TINY_VIT, f)
    return path


class TestClipesMaps(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.config = write_tiny_vit_config(cls.tmp.name)
        cls.model, cls.tokenizer = build_clip("xpseudo-test-tiny-vit", "none", cls.config, seed=0)
        cls.vocabulary = Vocabulary.from_names(["star", "disk", "cross"])
        cls.image = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_random_init_is_repeatable_and_texts_are_unit_vectors(self):
        again, _ = build_clip("xpseudo-test-tiny-vit", "none", self.config, seed=0)
        self.assertTrue(torch.equal(again.visual.proj, self.model.visual.proj))
        texts = class_embeddings(self.model, self.tokenizer, self.vocabulary, "a photo of a {}.")
        self.assertEqual(tuple(texts.shape), (3, 32))
        self.assertTrue(torch.allclose(texts.norm(dim=1), torch.ones(3), atol=1e-5))

    def test_vit_pass_matches_the_model_and_keeps_the_asked_attentions(self):
        vit = vit_pass(self.model.visual, self.image, attention_blocks=2)
        with torch.no_grad():
            reference = self.model.encode_image(self.image)[0]
        self.assertTrue(torch.allclose(vit.embedding.detach(), reference, atol=1e-5))
        self.assertEqual(vit.grid, (4, 4))
        self.assertEqual(len(vit.attentions), 2)
        for attention in vit.attentions:
            self.assertEqual(tuple(attention.shape), (16, 16))  # patch to patch, class token dropped
        self.assertEqual(len(vit_pass(self.model.visual, self.image, attention_blocks=0).attentions), 0)

    def test_attention_weights_equal_torch_multihead_attention(self):
        block = self.model.visual.transformer.resblocks[0]
        x = torch.randn(1, 17, 48, generator=torch.Generator().manual_seed(1))
        _, expected = block.attn(block.ln_1(x), block.ln_1(x), block.ln_1(x), need_weights=True, average_attn_weights=True)
        self.assertTrue(torch.allclose(attention_weights(block, x), expected, atol=1e-6))

    def test_grad_cam_is_the_gradient_weighted_sum_by_hand(self):
        texts = class_embeddings(self.model, self.tokenizer, self.vocabulary, "a photo of a {}.")
        background = F.normalize(torch.randn(2, 32, generator=torch.Generator().manual_seed(2)), dim=1)
        vit = vit_pass(self.model.visual, self.image, attention_blocks=1)
        maps, probabilities = softmax_grad_cam(vit, texts[[0, 2]], background, logit_scale=10.0)
        self.assertEqual(tuple(maps.shape), (2, 4, 4))
        self.assertTrue((maps >= 0).all())
        # by hand for class 2 (the second offered): softmax over offered + background only
        tokens = vit.tokens
        with torch.enable_grad():
            logits = 10.0 * F.normalize(vit.embedding, dim=0) @ torch.cat([texts[[0, 2]], background]).t()
            probability = logits.softmax(0)[1]
            (grad,) = torch.autograd.grad(probability, tokens, retain_graph=True)
        expected = F.relu(tokens[0, 1:].detach() @ grad[0, 1:].mean(0)).reshape(4, 4)
        self.assertTrue(torch.allclose(maps[1], expected, atol=1e-6))
        self.assertAlmostEqual(probabilities[1].item(), probability.item(), places=6)
        # class 1 (not offered) takes no part: the offered classes' maps do not depend on it
        other = class_embeddings(self.model, self.tokenizer, Vocabulary.from_names(["star", "moon", "cross"]), "a photo of a {}.")
        again, _ = softmax_grad_cam(vit_pass(self.model.visual, self.image, 1), other[[0, 2]], background, 10.0)
        self.assertTrue(torch.allclose(again, maps, atol=1e-6))

    def test_affinity_refinement_by_hand_and_inside_the_box(self):
        attentions = [torch.rand(4, 4, generator=torch.Generator().manual_seed(s)) for s in (3, 4)]
        affinity = patch_affinity(attentions)
        mean = (attentions[0] + attentions[1]) / 2
        self.assertTrue(torch.allclose(affinity, (mean + mean.t()) / 2))
        grid = torch.tensor([[[1.0, 0.2], [0.0, 0.0]]])  # 2 x 2 grid, one class
        refined = refine_maps(grid, affinity, steps=1, box_threshold=0.1)
        # box of values >= 0.1: the top row (patches 0, 1); transition restricted to it, row-normalised
        inside = torch.tensor([1.0, 1.0, 0.0, 0.0])
        restricted = affinity * inside[:, None] * inside[None, :]
        transition = restricted / restricted.sum(1, keepdim=True).clamp(min=1e-12)
        values = transition @ (grid.flatten() * inside)
        self.assertTrue(torch.allclose(refined[0].flatten(), values / values.max()))
        self.assertTrue((refined[0][1] == 0).all())  # nothing leaks out of the box
        self.assertTrue(torch.equal(map_box(torch.zeros(2, 2), 0.5), torch.zeros(2, 2, dtype=torch.bool)))
        plain = refine_maps(grid * 4, None, steps=0, box_threshold=0.1)
        self.assertTrue(torch.allclose(plain, grid))  # 0 steps: max-normalised only

    def test_regions_take_the_winning_class_and_are_split_into_components(self):
        maps = torch.zeros(2, 6, 6)
        maps[0, 0:2, 0:2] = 0.9  # class 0: two blobs
        maps[0, 4:6, 4:6] = 0.8
        maps[1, 0:2, 0:2] = 0.95  # class 1 wins the first blob
        maps[1, 4:6, 0:1] = 0.7  # a 2-pixel blob: below min_area 3
        regions = class_regions(maps, threshold=0.5, min_area=3)
        self.assertEqual([r.label for r in regions], [0, 1])
        self.assertEqual(regions[0].mask.nonzero().tolist(), [[4, 4], [4, 5], [5, 4], [5, 5]])
        self.assertEqual(regions[1].mask.sum().item(), 4)

    def test_snapping_to_teacher_masks(self):
        maps = torch.zeros(1, 6, 6)
        maps[0, 0:3, 0:3] = 1.0
        regions = class_regions(maps, 0.5, 1)
        teacher = torch.zeros(2, 6, 6, dtype=torch.bool)
        teacher[0, 0:3, 0:2] = True  # IoU 6 / 9
        teacher[1, 3:6, 3:6] = True  # IoU 0
        self.assertAlmostEqual(mask_iou(regions[0].mask[None], teacher)[0, 0].item(), 6 / 9, places=6)
        snapped = snap_to_teacher(regions, teacher, min_iou=0.5)
        self.assertEqual(len(snapped), 1)
        self.assertTrue(torch.equal(snapped[0].mask, teacher[0]))
        self.assertEqual(snap_to_teacher(regions, teacher, min_iou=0.7), [])


if __name__ == "__main__":
    unittest.main()
