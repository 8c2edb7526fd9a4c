"""The cross-modal pseudo-labeler: a trained teacher and an image's caption words -> pseudo instances."""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from detectron2.data import MetadataCatalog
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, BoxMode, ImageList, Instances

from xpseudo.text.caption_matcher import CaptionMatcher
from xpseudo.text.vocabulary import Vocabulary

from .selection import SelectionConfig, region_word_scores, select_regions

CLASS_CHOICES = ("all", "novel", "base")


class PseudoLabeler:
    """Runs stage 3 of XPM on batches of images.

    Per image: the teacher's RPN proposals (test-time settings) -> region embeddings; the caption's
    class words -> their text embeddings (the teacher's class embeddings for ``vocabulary``);
    ``select_regions`` on S = <region, word>; the teacher's class-agnostic mask head on the picked
    boxes; masks pasted at the image's original size.
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
    ):
        """``dataset_ids``: the category id written for each vocabulary index (default: the
        vocabulary's ids)."""
        self.model = model
        self.dataset_ids = list(dataset_ids) if dataset_ids is not None else vocabulary.ids
        self.vocabulary = vocabulary
        self.matcher = matcher or CaptionMatcher(vocabulary)
        self.wanted = frozenset(wanted_classes)
        self.selection, self.refine_boxes, self.mask_threshold = selection, refine_boxes, mask_threshold
        model.set_vocabulary(vocabulary, "the pseudo-label vocabulary")
        self.word_embeddings = model.roi_heads.box_predictor.class_embeddings

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
        if options.CLASSES not in CLASS_CHOICES:
            raise ValueError(f"XPM.PSEUDO_LABELS.CLASSES must be one of {CLASS_CHOICES}, got {options.CLASSES!r}")
        names = vocabulary.names
        metadata = MetadataCatalog.get(dataset_name)
        if options.CLASSES != "all":
            split = set(metadata.get(f"{options.CLASSES}_classes", []))
            names = [n for n in names if n in split]
        return cls(
            model,
            vocabulary,
            [vocabulary.index(n) for n in names],
            dataset_caption_matcher(dataset_name),
            SelectionConfig(options.TOP_K, options.MIN_SCORE, options.DEDUPLICATE, options.SCORE_TEMPERATURE),
            options.REFINE_BOXES,
            options.MASK_THRESHOLD,
            _dataset_ids(metadata, vocabulary),
        )

    def caption_words(self, captions: Sequence[str]) -> Tuple[List[int], List[str]]:
        """The wanted classes an image's captions name, in order of first mention, and for each the
        caption phrase that named it first."""
        classes: Dict[int, str] = {}
        for caption in captions:
            for match in self.matcher.find(caption):
                if match.class_index in self.wanted and match.class_index not in classes:
                    classes[match.class_index] = match.phrase
        return list(classes), list(classes.values())

    def box_labels(self, record: dict) -> Tuple[List[int], List[str], List[List[float]]]:
        """The wanted classes of a weak-label record's boxes (``annotations`` with contiguous
        ``category_id``), their class names, and the boxes as XYXY in the record's pixels."""
        classes, names, boxes = [], [], []
        for ann in record.get("annotations", []):
            if ann["category_id"] in self.wanted:
                classes.append(ann["category_id"])
                names.append(self.vocabulary[ann["category_id"]].name)
                boxes.append(BoxMode.convert(list(ann["bbox"]), ann.get("bbox_mode", BoxMode.XYWH_ABS), BoxMode.XYXY_ABS))
        return classes, names, boxes

    @torch.no_grad()
    def __call__(self, batched_inputs: List[dict]) -> List[Instances]:
        """``batched_inputs``: detectron2 inputs (``image``, ``height``, ``width``) with
        ``word_classes`` (vocabulary indices) and, for box weak labels, ``weak_boxes`` (one XYXY
        box per class, in the input image's pixels). Returns per image, at its original size,
        Instances with ``pred_boxes``, ``pred_masks`` (bool), ``scores`` (confidence),
        ``pred_classes`` (vocabulary index) and ``word_index`` (position in ``word_classes``).

        A caption's class words pick proposals (``select_regions``); a given box is its own pick,
        with confidence 1 (the box and class are annotated; the teacher draws only the mask)."""
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
                embeddings, deltas = model.roi_heads.region_embeddings_and_deltas(subset_features, boxes)
                per_image = [len(b) for b in boxes]
                regions_of = dict(zip(selecting, zip(boxes, embeddings.split(per_image), deltas.split(per_image))))
            results = []
            for i, (x, image_size) in enumerate(zip(batched_inputs, images.image_sizes)):
                if i not in regions_of:
                    results.append(self._given_boxes(x, image_size))
                    continue
                image_boxes, regions, image_deltas = regions_of[i]
                classes = torch.as_tensor(x["word_classes"], dtype=torch.long, device=regions.device)
                picked = select_regions(region_word_scores(regions, self.word_embeddings[classes]), self.selection)
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
            return [
                detector_postprocess(r, x.get("height", s[0]), x.get("width", s[1]), mask_threshold=self.mask_threshold)
                for r, x, s in zip(results, batched_inputs, images.image_sizes)
            ]
        finally:
            model.train(was_training)


def _given_boxes_instances(boxes: torch.Tensor, classes: torch.Tensor, image_size) -> Instances:
    instances = Instances(image_size)
    instances.pred_boxes = Boxes(boxes)
    instances.pred_boxes.clip(image_size)
    instances.pred_classes = classes
    instances.scores = torch.ones(len(classes), device=boxes.device)
    instances.word_index = torch.arange(len(classes), device=boxes.device)
    return instances


def _dataset_ids(metadata, vocabulary: Vocabulary) -> List[int]:
    """Category id of each contiguous class: the dataset's own ids where its metadata maps them."""
    mapping = metadata.get("thing_dataset_id_to_contiguous_id")
    if not mapping:
        return vocabulary.ids
    inverse = {v: k for k, v in mapping.items()}
    return [inverse[i] for i in range(len(vocabulary))]
