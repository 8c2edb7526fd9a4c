"""The cross-modal pseudo-labeler: a trained teacher and an image's weak labels (caption words,
tags, boxes or points) -> pseudo instances."""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.data import MetadataCatalog
from detectron2.layers.mask_ops import paste_masks_in_image
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, ImageList, Instances

from xpseudo.text.caption_matcher import CaptionMatcher
from xpseudo.text.vocabulary import Vocabulary

from .selection import (
    SelectionConfig,
    mask_covers,
    region_word_scores,
    restricted_class_probabilities,
    scribble_points,
    select_point_regions,
    select_regions,
    select_scribble_regions,
)
from .weak_label_reader import ImageLabels, WeakLabelReader  # noqa: F401  ImageLabels: re-exported

CLASS_CHOICES = ("all", "novel", "base")
# how a region is scored for a class: the authors' cosine of region and word, or the teacher's
# classifier restricted to the image's named classes plus background
SCORE_CHOICES = ("similarity", "classifier")


class PseudoLabeler(WeakLabelReader):
    """Runs stage 3 of XPM on batches of images.

    Per image: the teacher's RPN proposals (test-time settings) -> region embeddings; the caption's
    class words -> their text embeddings (the teacher's class embeddings for ``vocabulary``);
    ``select_regions`` on S = <region, word> (or the restricted classifier, ``score``); the
    teacher's class-agnostic mask head on the picked boxes; masks pasted at the image's original
    size. Tags pick as caption words do; a clicked point picks among the proposals that contain it;
    a scribble picks the proposal whose mask covers most of it and least of the other scribbles;
    a given box is its own pick.
    """

    def __init__(
        self,
        model,
        vocabulary: Vocabulary,
        wanted_classes: Sequence[int],
        matcher: Optional[CaptionMatcher] = None,
        selection: SelectionConfig = SelectionConfig(),
        refine_boxes: bool = True,
        mask_threshold: float = 0.5,
        dataset_ids: Sequence[int] = None,
        score: str = "similarity",
        counts: bool = False,
        plural_count: int = 2,
        known_classes: Sequence[int] = (),
        uncertain_band: Sequence[float] = (),
        normalize_regions: bool = True,
    ):
        """``dataset_ids``: the category id written for each vocabulary index (default: the
        vocabulary's ids). ``counts``: a caption's number words and plurals ask for that many
        regions ("two stars" -> 2, "stars" -> ``plural_count``); otherwise one per class word.
        ``known_classes``: the classes the teacher was trained on (the base split); with the
        restricted classifier they compete beside the image's named classes, so that an object of
        a base class is not given to a novel word because it is surely no background.
        ``uncertain_band``: (low, high); each result then also has ``uncertain_masks``, the pixels
        whose pasted mask probability lies in [low, high] (what the confidence-guided student
        loss ignores). ``normalize_regions`` False: with ``score`` "similarity", S is the dot
        product of the region embedding as projected (not L2-normalised) and the normalised word,
        as the authors' release picks; a region of large norm then wins over a better-aligned one."""
        if score not in SCORE_CHOICES:
            raise ValueError(f"score must be one of {SCORE_CHOICES}, got {score!r}")
        if not normalize_regions and score != "similarity":
            raise ValueError("XPM.PSEUDO_LABELS.NORMALIZE_REGIONS False needs SCORE similarity (the classifier is a cosine)")
        self.normalize_regions = normalize_regions
        super().__init__(vocabulary, wanted_classes, matcher, counts, plural_count)
        self.score = score
        if uncertain_band and not (len(uncertain_band) == 2 and 0.0 <= uncertain_band[0] <= uncertain_band[1] <= 1.0):
            raise ValueError(f"XPM.PSEUDO_LABELS.UNCERTAIN_BAND must be (low, high) with 0 <= low <= high <= 1, got {tuple(uncertain_band)}")
        self.uncertain_band = tuple(float(v) for v in uncertain_band)
        self.known_classes = sorted(set(known_classes))
        self.model = model
        self.dataset_ids = list(dataset_ids) if dataset_ids is not None else vocabulary.ids
        self.selection, self.refine_boxes, self.mask_threshold = selection, refine_boxes, mask_threshold
        model.set_vocabulary(vocabulary, "the pseudo-label vocabulary")
        self.word_embeddings = model.roi_heads.box_predictor.class_embeddings

    name = "xpm"  # the labeler, as provenance.json names it

    def settings(self) -> dict:
        """What the labels depend on besides the teacher, config and data (for provenance.json)."""
        return {
            "top_k": self.selection.top_k,
            "min_score": self.selection.min_score,
            "deduplicate": self.selection.deduplicate,
            "score_temperature": self.selection.temperature,
            "pick_iou": self.selection.pick_iou,
            "assignment": self.selection.assignment,
            "score": self.score,
            "counts": self.counts,
            "plural_count": self.plural_count,
            "refine_boxes": self.refine_boxes,
            "mask_threshold": self.mask_threshold,
            "uncertain_band": list(self.uncertain_band),
            "normalize_regions": self.normalize_regions,
        }

    def _given_boxes(self, x: dict, image_size) -> Instances:
        device = self.word_embeddings.device
        boxes = torch.as_tensor(x["weak_boxes"], dtype=torch.float32, device=device).reshape(-1, 4)
        classes = torch.as_tensor(x["word_classes"], dtype=torch.long, device=device)
        return _given_boxes_instances(boxes, classes, image_size)

    @classmethod
    def from_config(cls, cfg, model, dataset_name: str) -> "PseudoLabeler":
        from xpseudo.modeling.vocabulary import dataset_caption_matcher, dataset_vocabulary

        options = cfg.XPM.PSEUDO_LABELS
        vocabulary = dataset_vocabulary(dataset_name)
        metadata = MetadataCatalog.get(dataset_name)
        return cls(
            model,
            vocabulary,
            wanted_class_indices(vocabulary, metadata, options.CLASSES),
            dataset_caption_matcher(dataset_name),
            SelectionConfig(options.TOP_K, options.MIN_SCORE, options.DEDUPLICATE, options.SCORE_TEMPERATURE, options.PICK_IOU,
                            options.ASSIGNMENT),
            options.REFINE_BOXES,
            options.MASK_THRESHOLD,
            dataset_category_ids(metadata, vocabulary),
            options.SCORE,
            options.COUNTS,
            options.PLURAL_COUNT,
            metadata.get("base_class_ids", []),
            options.UNCERTAIN_BAND,
            options.NORMALIZE_REGIONS,
        )

    def _class_scores(self, regions: torch.Tensor, classes: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Scores (P x labels) to pick by, and confidences when they are not sigmoid(S / T)."""
        if self.score == "similarity":
            return region_word_scores(regions, self.word_embeddings[classes]), None
        predictor = self.model.roi_heads.box_predictor
        competing = torch.cat([classes, torch.as_tensor(self.known_classes, dtype=torch.long, device=classes.device)])
        unique, column = torch.unique(competing, return_inverse=True)
        background = F.normalize(predictor.background_embedding, dim=0)
        probabilities = restricted_class_probabilities(regions, self.word_embeddings[unique], background, predictor.temperature)
        probabilities = probabilities[:, column[: len(classes)]]
        return probabilities, probabilities

    @torch.no_grad()
    def __call__(self, batched_inputs: List[dict]) -> List[Instances]:
        """``batched_inputs``: detectron2 inputs (``image``, ``height``, ``width``) with
        ``word_classes`` (vocabulary indices, one per label), optionally ``word_counts`` (regions
        wanted per class word), and for box, point or scribble labels ``weak_boxes`` (XYXY),
        ``weak_points`` (x, y) or ``weak_scribbles`` (a K x 2 polyline each), one per label in the
        input image's pixels. Returns per image, at its
        original size, Instances with ``pred_boxes``, ``pred_masks`` (bool), ``scores``
        (confidence), ``pred_classes`` (vocabulary index) and ``word_index`` (position in
        ``word_classes``).

        Class words and tags pick proposals (``select_regions``), a point the best proposal that
        contains it (``select_point_regions``); a given box is its own pick, with confidence 1 (the
        box and class are annotated; the teacher draws only the mask)."""
        model = self.model
        was_training = model.training
        model.eval()
        try:
            images = model.preprocess_image(batched_inputs)
            features = model.backbone(images.tensor)
            selecting = [i for i, x in enumerate(batched_inputs) if "weak_boxes" not in x]
            regions_of = {}
            if selecting:  # proposals only for the images whose classes pick them
                subset, subset_features = images, features
                if len(selecting) < len(batched_inputs):
                    subset = ImageList(images.tensor[selecting], [images.image_sizes[i] for i in selecting])
                    subset_features = {k: v[selecting] for k, v in features.items()}
                proposals, _ = model.proposal_generator(subset, subset_features, None)
                boxes = [p.proposal_boxes for p in proposals]
                embeddings, deltas = model.roi_heads.region_embeddings_and_deltas(subset_features, boxes, self.normalize_regions)
                per_image = [len(b) for b in boxes]
                regions_of = dict(zip(selecting, zip(boxes, embeddings.split(per_image), deltas.split(per_image), range(len(selecting)))))
            results = []
            for i, (x, image_size) in enumerate(zip(batched_inputs, images.image_sizes)):
                if i not in regions_of:
                    results.append(self._given_boxes(x, image_size))
                    continue
                image_boxes, regions, image_deltas, position = regions_of[i]
                classes = torch.as_tensor(x["word_classes"], dtype=torch.long, device=regions.device)
                scores, confidences = self._class_scores(regions, classes)
                if "weak_scribbles" in x:
                    image_features = {k: v[position : position + 1] for k, v in subset_features.items()}
                    coverage, leakage = self._scribble_coverage(image_features, image_boxes, x["weak_scribbles"])
                    if confidences is None:
                        confidences = torch.sigmoid(scores / self.selection.temperature)
                    picked = select_scribble_regions(coverage, leakage, confidences, scores, self.selection)
                elif "weak_points" in x:
                    points = torch.as_tensor(x["weak_points"], dtype=torch.float32, device=regions.device).reshape(-1, 2)
                    picked = select_point_regions(scores, image_boxes.tensor, points, confidences, self.selection)
                else:
                    picked = select_regions(scores, self.selection, counts=x.get("word_counts"), boxes=image_boxes.tensor,
                                            confidences=confidences)
                chosen = image_boxes.tensor[picked.regions]
                if self.refine_boxes:
                    transform = model.roi_heads.box_predictor.box2box_transform
                    chosen = transform.apply_deltas(image_deltas[picked.regions], chosen)
                instances = Instances(image_size)
                instances.pred_boxes = Boxes(chosen)
                instances.pred_boxes.clip(image_size)
                instances.pred_classes = classes[picked.words]
                instances.scores = picked.confidences
                instances.word_index = picked.words
                results.append(instances)
            results = model.roi_heads.forward_with_given_boxes(features, results)
            return [self._paste(r, x.get("height", s[0]), x.get("width", s[1])) for r, x, s in zip(results, batched_inputs, images.image_sizes)]
        finally:
            model.train(was_training)


    def _scribble_coverage(self, features, boxes: Boxes, scribbles) -> Tuple[torch.Tensor, torch.Tensor]:
        """For each proposal and scribble (P x N): the fraction of the scribble's points inside the
        proposal's mask (the mask head's probability > ``mask_threshold``), and the fraction of the
        other scribbles' points inside it."""
        heads = self.model.roi_heads
        device = boxes.tensor.device
        points = [scribble_points(torch.as_tensor(s, dtype=torch.float32, device=device)) for s in scribbles]
        every = torch.cat(points)
        x, y, b = every[:, 0], every[:, 1], boxes.tensor
        # only proposals holding a scribble point can cover one: the mask head runs on those alone
        holding = ((b[:, None, 0] <= x) & (x <= b[:, None, 2]) & (b[:, None, 1] <= y) & (y <= b[:, None, 3])).any(1)
        inside = torch.zeros(len(b), len(every), dtype=torch.bool, device=device)  # P x all points
        if holding.any():
            pooled = heads.mask_pooler([features[f] for f in heads.mask_in_features], [Boxes(b[holding])])
            logits = heads.mask_head.layers(pooled)
            logits = logits[0] if isinstance(logits, tuple) else logits  # the student's head also gives sigma
            inside[holding] = mask_covers(torch.sigmoid(logits[:, 0]), b[holding], every, self.mask_threshold)
        owner = torch.cat([torch.full((len(p),), n, device=device) for n, p in enumerate(points)])
        coverage, leakage = [], []
        for n in range(len(points)):
            mine = owner == n
            coverage.append(inside[:, mine].float().mean(1))
            leakage.append(inside[:, ~mine].float().mean(1) if (~mine).any() else torch.zeros(len(boxes), device=device))
        return torch.stack(coverage, 1), torch.stack(leakage, 1)

    def _paste(self, result: Instances, height: int, width: int) -> Instances:
        """Masks pasted at the original size at ``mask_threshold``, and the uncertain band."""
        probabilities = result.pred_masks
        pasted = detector_postprocess(result, height, width, mask_threshold=self.mask_threshold)
        if self.uncertain_band:
            # threshold < 0: detectron2 pastes the probability itself, as round-down uint8 of p * 255
            soft = paste_masks_in_image(probabilities[:, 0], pasted.pred_boxes, pasted.image_size, threshold=-1)
            low, high = self.uncertain_band
            pasted.uncertain_masks = (soft >= low * 255) & (soft <= high * 255)
        return pasted


def _given_boxes_instances(boxes: torch.Tensor, classes: torch.Tensor, image_size) -> Instances:
    instances = Instances(image_size)
    instances.pred_boxes = Boxes(boxes)
    instances.pred_boxes.clip(image_size)
    instances.pred_classes = classes
    instances.scores = torch.ones(len(classes), device=boxes.device)
    instances.word_index = torch.arange(len(classes), device=boxes.device)
    return instances


def wanted_class_indices(vocabulary: Vocabulary, metadata, classes: str) -> List[int]:
    """Vocabulary indices of XPM.PSEUDO_LABELS.CLASSES ("all", "novel" or "base" of the split)."""
    if classes not in CLASS_CHOICES:
        raise ValueError(f"XPM.PSEUDO_LABELS.CLASSES must be one of {CLASS_CHOICES}, got {classes!r}")
    if classes == "all":
        return list(range(len(vocabulary)))
    split = set(metadata.get(f"{classes}_classes", []))
    return [vocabulary.index(n) for n in vocabulary.names if n in split]


def dataset_category_ids(metadata, vocabulary: Vocabulary) -> List[int]:
    """Category id of each contiguous class: the dataset's own ids where its metadata maps them."""
    mapping = metadata.get("thing_dataset_id_to_contiguous_id")
    if not mapping:
        return vocabulary.ids
    inverse = {v: k for k, v in mapping.items()}
    return [inverse[i] for i in range(len(vocabulary))]
