"""The CLIP-ES pseudo-labeler: class maps from a frozen CLIP, instances from them (and, when given,
a class-agnostic teacher's masks), in the interface of xpseudo's PseudoLabeler, so that xpseudo's
shards, merge, student and report take its labels unchanged."""
import json
import logging
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import BitMasks, Instances

from xpseudo.pseudo.weak_label_reader import WeakLabelReader
from xpseudo.text.caption_matcher import CaptionMatcher
from xpseudo.text.vocabulary import Vocabulary
from xpseudo.utils.io import InputError

from .affinity import patch_affinity, refine_maps
from .clip_model import class_embeddings, phrase_embeddings
from .grad_cam import softmax_grad_cam, vit_pass
from .instances import class_regions, snap_to_teacher

logger = logging.getLogger(__name__)


def load_background_words(path: str) -> List[str]:
    with open(path) as f:
        words = json.load(f).get("words")
    if not isinstance(words, list) or not words or not all(isinstance(w, str) and w for w in words):
        raise InputError(path, "'words' must be a non-empty list of strings")
    return words


class ClipesLabeler(WeakLabelReader):
    """Per image: the classes its captions or tags name (``WeakLabelReader``) -> softmax GradCAM maps
    (``grad_cam``) refined by attention affinity (``affinity``) -> connected regions per class
    (``instances``), each snapped to the best-overlapping teacher mask when a teacher is given.
    Boxes and points are not read: this labeler needs only class names."""

    name = "clipes"

    def __init__(self, clip_model, tokenizer, vocabulary: Vocabulary, wanted_classes: Sequence[int], *,
                 matcher: Optional[CaptionMatcher] = None, dataset_ids: Optional[Sequence[int]] = None,
                 prompts: Sequence[str] = ("a photo of a {}.",), fuse_synonyms: bool = True,
                 background_words: Sequence[str] = ("background",), affinity_blocks: int = 4, affinity_steps: int = 2,
                 box_threshold: float = 0.4, map_threshold: float = 0.5, min_area: int = 16, teacher=None,
                 teacher_proposals: int = 50, min_iou: float = 0.2, input_format: str = "BGR"):
        super().__init__(vocabulary, wanted_classes, matcher)
        if not prompts or not all("{}" in p for p in prompts):
            raise ValueError(f"CLIPES.PROMPTS must be templates with '{{}}', got {list(prompts)}")
        self.clip, self.tokenizer = clip_model, tokenizer
        self.dataset_ids = list(dataset_ids) if dataset_ids is not None else vocabulary.ids
        self.prompts, self.fuse_synonyms = list(prompts), fuse_synonyms
        self.background_words = list(background_words)
        self.affinity_blocks, self.affinity_steps, self.box_threshold = affinity_blocks, affinity_steps, box_threshold
        self.map_threshold, self.min_area = map_threshold, min_area
        self.teacher, self.teacher_proposals, self.min_iou = teacher, teacher_proposals, min_iou
        self.input_format = input_format
        preprocess = getattr(clip_model.visual, "preprocess_cfg", {}) or {}
        size = clip_model.visual.image_size
        self.input_size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
        self.mean = torch.tensor(preprocess.get("mean", (0.48145466, 0.4578275, 0.40821073))).view(3, 1, 1)
        self.std = torch.tensor(preprocess.get("std", (0.26862954, 0.26130258, 0.27577711))).view(3, 1, 1)
        self.logit_scale = float(clip_model.logit_scale.detach().exp())
        self.prompt_sharpness = {}
        self.use_prompt(self.prompts[0])

    @classmethod
    def from_config(cls, cfg, clip_model, tokenizer, dataset_name: str, teacher=None) -> "ClipesLabeler":
        from detectron2.data import MetadataCatalog

        from xpseudo.modeling.vocabulary import dataset_caption_matcher, dataset_vocabulary
        from xpseudo.pseudo.labeler import dataset_category_ids, wanted_class_indices

        vocabulary = dataset_vocabulary(dataset_name)
        metadata = MetadataCatalog.get(dataset_name)
        c = cfg.CLIPES
        return cls(
            clip_model, tokenizer, vocabulary, wanted_class_indices(vocabulary, metadata, cfg.XPM.PSEUDO_LABELS.CLASSES),
            matcher=dataset_caption_matcher(dataset_name), dataset_ids=dataset_category_ids(metadata, vocabulary),
            prompts=c.PROMPTS, fuse_synonyms=c.FUSE_SYNONYMS, background_words=load_background_words(c.BACKGROUND_WORDS),
            affinity_blocks=c.AFFINITY_BLOCKS, affinity_steps=c.AFFINITY_STEPS, box_threshold=c.BOX_THRESHOLD,
            map_threshold=c.MAP_THRESHOLD, min_area=c.MIN_AREA, teacher=teacher, teacher_proposals=c.TEACHER_PROPOSALS,
            min_iou=c.MIN_IOU, input_format=cfg.INPUT.FORMAT,
        )

    def use_prompt(self, template: str) -> None:
        self.template = template
        self.class_texts = class_embeddings(self.clip, self.tokenizer, self.vocabulary, template, self.fuse_synonyms)
        self.background_texts = phrase_embeddings(self.clip, self.tokenizer, self.background_words, template)

    def settings(self) -> dict:
        return {
            "clip_model": getattr(self.clip, "xpseudo_name", None),
            "prompt": self.template,
            "prompt_sharpness": self.prompt_sharpness,
            "fuse_synonyms": self.fuse_synonyms,
            "background_words": self.background_words,
            "affinity_blocks": self.affinity_blocks,
            "affinity_steps": self.affinity_steps,
            "box_threshold": self.box_threshold,
            "map_threshold": self.map_threshold,
            "min_area": self.min_area,
            "teacher": self.teacher is not None,
            "teacher_proposals": self.teacher_proposals,
            "min_iou": self.min_iou,
        }

    # --- CLIP ---
    def clip_input(self, x: dict) -> torch.Tensor:
        """1 x 3 x h x w: the detectron2 input image as RGB in [0, 1], resized to CLIP's input size
        and normalised as CLIP was trained."""
        image = x["image"].float() / 255
        if self.input_format == "BGR":
            image = image.flip(0)
        image = F.interpolate(image[None], size=self.input_size, mode="bilinear", align_corners=False)[0]
        device = self.class_texts.device
        return ((image - self.mean) / self.std)[None].to(device)

    def class_probabilities(self, x: dict, template_texts: torch.Tensor, background_texts: torch.Tensor) -> torch.Tensor:
        """Softmax over all vocabulary classes and the background prompts of the image embedding."""
        with torch.no_grad():
            embedding = F.normalize(self.clip.encode_image(self.clip_input(x)).float()[0], dim=0)
            return (self.logit_scale * embedding @ torch.cat([template_texts, background_texts]).t()).softmax(0)

    def choose_prompt(self, items: Sequence[dict]) -> str:
        """Use the template whose scores are sharpest on ``items`` (inputs with ``word_classes``):
        the softmax mass on each image's own classes, averaged. Ties: the first template."""
        if len(self.prompts) > 1 and items:
            for template in self.prompts:
                texts = class_embeddings(self.clip, self.tokenizer, self.vocabulary, template, self.fuse_synonyms)
                background = phrase_embeddings(self.clip, self.tokenizer, self.background_words, template)
                mass = [float(self.class_probabilities(x, texts, background)[sorted(set(x["word_classes"]))].sum()) for x in items]
                self.prompt_sharpness[template] = round(sum(mass) / len(mass), 6)
            best = max(self.prompts, key=lambda t: self.prompt_sharpness[t])
            logger.info(f"CLIP-ES prompt {best!r} (sharpness {self.prompt_sharpness})")
            self.use_prompt(best)
        return self.template

    def class_maps(self, x: dict) -> torch.Tensor:
        """K x height x width maps (K vocabulary classes, the input's original size), each in
        [0, 1]; zeros for every class the image's labels do not offer."""
        height, width = x.get("height", x["image"].shape[1]), x.get("width", x["image"].shape[2])
        offered = sorted(set(x["word_classes"]))
        full = torch.zeros(len(self.vocabulary), height, width)
        if not offered:
            return full
        vit = vit_pass(self.clip.visual, self.clip_input(x), self.affinity_blocks)
        maps, _ = softmax_grad_cam(vit, self.class_texts[offered], self.background_texts, self.logit_scale)
        steps = self.affinity_steps if vit.attentions else 0
        maps = refine_maps(maps, patch_affinity(vit.attentions) if steps else None, steps, self.box_threshold)
        resized = F.interpolate(maps[None].float().cpu(), size=(height, width), mode="bilinear", align_corners=False)[0]
        full[offered] = resized / resized.flatten(1).amax(1).clamp(min=1e-12)[:, None, None]
        return full

    # --- the teacher's class-agnostic masks ---
    def teacher_masks(self, x: dict) -> torch.Tensor:
        """P x height x width bool: the teacher's masks of its top proposals, at the original size."""
        model = self.teacher
        model.eval()
        with torch.no_grad():
            images = model.preprocess_image([x])
            features = model.backbone(images.tensor)
            proposals, _ = model.proposal_generator(images, features, None)
            boxes = proposals[0].proposal_boxes[: self.teacher_proposals]
            given = Instances(images.image_sizes[0], pred_boxes=boxes, pred_classes=torch.zeros(len(boxes), dtype=torch.long, device=boxes.device))
            result = model.roi_heads.forward_with_given_boxes(features, [given])[0]
            height, width = x.get("height", x["image"].shape[1]), x.get("width", x["image"].shape[2])
            return detector_postprocess(result, height, width).pred_masks.cpu()

    def __call__(self, batched_inputs: List[dict]) -> List[Instances]:
        """Inputs as xpseudo's ``PseudoLabeler`` takes them (``image``, ``height``, ``width``,
        ``word_classes``); per image, at its original size, Instances with ``pred_boxes``,
        ``pred_masks``, ``scores`` (the class map's mean over the mask), ``pred_classes`` and
        ``word_index``."""
        return [self._label(x) for x in batched_inputs]

    def _label(self, x: dict) -> Instances:
        maps = self.class_maps(x)
        offered = sorted(set(x["word_classes"]))
        regions = class_regions(maps[offered], self.map_threshold, self.min_area)
        if self.teacher is not None:
            regions = snap_to_teacher(regions, self.teacher_masks(x), self.min_iou)
        size = tuple(maps.shape[1:])
        out = Instances(size)
        masks = torch.stack([r.mask for r in regions]) if regions else torch.zeros((0,) + size, dtype=torch.bool)
        classes = torch.tensor([offered[r.label] for r in regions], dtype=torch.long)
        out.pred_masks = masks
        out.pred_boxes = BitMasks(masks).get_bounding_boxes()
        out.pred_classes = classes
        out.scores = torch.stack([maps[c][m].mean() for c, m in zip(classes.tolist(), masks)]) if regions else torch.zeros(0)
        words = list(x["word_classes"])
        out.word_index = torch.tensor([words.index(c) for c in classes.tolist()], dtype=torch.long)
        return out
