"""Stage 1 as its own pretraining (XPMGroundingPretrainer), grid regions, and the teacher starting
from it with its projection frozen."""
import copy
import os
import unittest

from tests.helpers import HAS_DETECTRON2, REPO, RegisteredShapes, requires_detectron2

if HAS_DETECTRON2:
    import torch
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model
    from detectron2.utils.events import EventStorage

    import xpseudo.modeling  # noqa: F401
    from xpseudo.config import add_xpseudo_config
    from xpseudo.modeling.teacher import grid_cells

    from tests.test_teacher import annotated_image


def config(name, embeddings, *overrides):
    cfg = get_cfg()
    add_xpseudo_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs", "shapes", name))
    cfg.merge_from_list(["MODEL.XPM.TEXT_EMBEDDINGS", embeddings, "MODEL.XPM.EMBEDDING_DIM", "32",
                         "MODEL.XPM.GROUNDING.WORDS", "vocabulary", *overrides])
    return cfg


def caption_image(words, seed):
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.rand(3, 96, 96, generator=g) * 255, "height": 96, "width": 96, "caption_words": words}


@requires_detectron2
class TestGridCells(unittest.TestCase):
    def test_cells_cover_the_image_and_a_random_subset_is_kept(self):
        cells = grid_cells(70, 100, 32, 100)
        self.assertEqual(len(cells), 3 * 4)  # ceil(70 / 32) rows, ceil(100 / 32) columns
        self.assertEqual(cells.tensor[0].tolist(), [0.0, 0.0, 32.0, 32.0])
        self.assertEqual(cells.tensor[-1].tolist(), [96.0, 64.0, 100.0, 70.0])  # clipped to the image
        self.assertEqual(float(cells.area().sum()), 70.0 * 100.0)
        torch.manual_seed(0)
        kept = grid_cells(70, 100, 32, 5).tensor
        self.assertEqual(len(kept), 5)
        self.assertTrue(all(any(torch.equal(k, c) for c in cells.tensor) for k in kept))
        self.assertEqual(len({tuple(k.tolist()) for k in kept}), 5)


@requires_detectron2
class TestGroundingPretrainer(RegisteredShapes, unittest.TestCase):
    def test_grid_grounding_trains_only_what_grounding_uses(self):
        torch.manual_seed(0)
        model = build_model(config("xpm_grounding_R18_FPN.yaml", self.embeddings))
        self.assertEqual((model.grounding_region_source, model.grounding_loss_form, model.grid_feature), ("grid", "averaged", "p5"))
        model.train()
        batch = [caption_image([5, 1], 0), caption_image([6], 1), caption_image([0, 2, 3], 2)]
        with EventStorage():
            losses = model(batch)
        self.assertEqual(set(losses), {"loss_grounding"})
        self.assertTrue(torch.isfinite(losses["loss_grounding"]))
        self.assertGreater(losses["loss_grounding"].item(), 0)
        losses["loss_grounding"].backward()
        # the grid feature is p5: FPN's convolutions of the other levels are not on its path
        other_levels = tuple(f"backbone.fpn_{kind}{level}." for kind in ("lateral", "output") for level in (2, 3, 4))
        for name, parameter in model.named_parameters():
            trained = name.startswith(("backbone.", "roi_heads.box_head.", "roi_heads.box_predictor.projection.")) and not name.startswith(other_levels)
            self.assertEqual(parameter.requires_grad, trained, name)
            if trained:  # every trained parameter has a gradient: DDP needs no unused-parameter search
                self.assertIsNotNone(parameter.grad, name)
        self.assertGreater(model.roi_heads.box_predictor.projection.weight.grad.abs().sum().item(), 0)
        self.assertGreater(model.backbone.bottom_up.stem.conv1.weight.grad.abs().sum().item(), 0)

        # its checkpoint is the teacher's, parameter for parameter
        teacher = build_model(config("xpm_teacher_R18_FPN.yaml", self.embeddings))
        self.assertEqual(set(teacher.state_dict()), set(model.state_dict()))
        teacher.load_state_dict(model.state_dict())
        self.assertTrue(torch.equal(teacher.roi_heads.box_predictor.projection.weight, model.roi_heads.box_predictor.projection.weight))

    def test_frozen_projection_stays_bit_identical_through_training(self):
        torch.manual_seed(0)
        model = build_model(config("xpm_teacher_R18_FPN.yaml", self.embeddings, "MODEL.XPM.FREEZE_PROJECTION", "True"))
        model.train()
        projection = copy.deepcopy(model.roi_heads.box_predictor.projection.state_dict())
        head = copy.deepcopy(model.roi_heads.box_head.state_dict())
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05, momentum=0.9, weight_decay=1e-4)
        for step in range(3):
            batch = [annotated_image([0, 3]), caption_image([5, 1], step), caption_image([6], step + 10)]
            with EventStorage():
                loss = sum(model(batch).values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        for key, value in model.roi_heads.box_predictor.projection.state_dict().items():
            self.assertTrue(torch.equal(value, projection[key]), key)
        self.assertFalse(all(torch.equal(v, head[k]) for k, v in model.roi_heads.box_head.state_dict().items()))  # the rest trains

    def test_every_loss_form_in_the_stage_and_the_teacher(self):
        """Each MODEL.XPM.GROUNDING.LOSS trains the grounding path, on grid cells (stage 1) and on
        proposals (the teacher); each form's math is tested in test_grounding_loss."""
        from xpseudo.losses.grounding import LOSS_FORMS

        for name in ("xpm_grounding_R18_FPN.yaml", "xpm_teacher_R18_FPN.yaml"):
            for form in LOSS_FORMS:
                torch.manual_seed(0)
                model = build_model(config(name, self.embeddings, "MODEL.XPM.GROUNDING.LOSS", form))
                model.train()
                batch = [caption_image([5, 1], 0), caption_image([6], 1), caption_image([0, 2, 3], 2)]
                if name.startswith("xpm_teacher"):
                    batch.insert(0, annotated_image([0, 3]))
                with EventStorage():
                    loss = model(batch)["loss_grounding"]
                self.assertTrue(torch.isfinite(loss) and loss.item() > 0, (name, form))
                loss.backward()
                self.assertGreater(model.roi_heads.box_predictor.projection.weight.grad.abs().sum().item(), 0, (name, form))

    def test_one_caption_words_are_drawn_per_step_from_the_images_captions(self):
        """GROUNDING.WORDS one_caption (the authors' stage-1 words): each loaded caption image
        carries the word list of one of its captions."""
        from xpseudo.data.xpm_loader import caption_loader, grounding_data

        cfg = config("xpm_grounding_R18_FPN.yaml", self.embeddings, "MODEL.XPM.GROUNDING.WORDS", "one_caption",
                     "MODEL.XPM.GROUNDING.MIN_WORD_COUNT", "1", "DATALOADER.NUM_WORKERS", "0", "XPM.CAPTION_IMS_PER_BATCH", "4")
        table, records = grounding_data(cfg)
        self.assertTrue({"a", "the"} & set(table.names))  # stop words are words here
        choices = {r["image_id"]: r["caption_word_choices"] for r in records}
        self.assertEqual(len(choices), 8)  # every image has a word
        seen = set()
        for step, batch in zip(range(6), caption_loader(cfg)):
            for item in batch:
                self.assertIn(item["caption_words"], choices[item["image_id"]])
                seen.add((item["image_id"], tuple(item["caption_words"])))
        self.assertGreater(len(seen), len({image for image, _ in seen}))  # some image was seen with two captions

    def test_bad_choices_are_refused(self):
        with self.assertRaisesRegex(ValueError, "MODEL.XPM.GROUNDING.REGIONS must be one of"):
            build_model(config("xpm_teacher_R18_FPN.yaml", self.embeddings, "MODEL.XPM.GROUNDING.REGIONS", "cells"))
        with self.assertRaisesRegex(ValueError, "MODEL.XPM.GROUNDING.LOSS must be one of"):
            build_model(config("xpm_teacher_R18_FPN.yaml", self.embeddings, "MODEL.XPM.GROUNDING.LOSS", "mean"))
        with self.assertRaisesRegex(ValueError, "GRID_FEATURE 'res9' is not a backbone output"):
            build_model(config("xpm_teacher_R18_FPN.yaml", self.embeddings, "MODEL.XPM.GROUNDING.GRID_FEATURE", "res9"))


if __name__ == "__main__":
    unittest.main()
