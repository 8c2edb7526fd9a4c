"""XPM teacher: Mask R-CNN with an open-vocabulary classifier and a caption-grounding loss."""
import contextlib
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from detectron2.modeling.poolers import ROIPooler
from detectron2.structures import Boxes, ImageList

from xpseudo.data.xpm_loader import grounding_data
from xpseudo.losses.grounding import LOSS_FORMS, grounding_loss
from xpseudo.text.caption_words import WORD_MODES
from xpseudo.text.embedding_cache import ClassEmbeddingProvider
from xpseudo.text.vocabulary import Vocabulary
from xpseudo.utils.distributed import gather_padded, scale_for_ddp
from xpseudo.utils.io import InputError

from .vocabulary import build_embedding_provider, dataset_vocabulary

@contextlib.contextmanager
def _inference_mode(module: torch.nn.Module):
    """Run ``module`` with its test-time settings (e.g. RPN top-k) without touching the rest."""
    was_training = module.training
    module.train(False)
    try:
        with torch.no_grad():
            yield
    finally:
        module.train(was_training)


@META_ARCH_REGISTRY.register()
class XPMTeacher(GeneralizedRCNN):
    """Batches mix annotated images (``instances``: detection and mask losses on the training
    classes) and caption images (``caption_words``: the grounding loss between their regions and
    the words of their captions). Both kinds are in every training batch (see
    ``xpseudo.data.build_xpm_train_loader``). At test time the classes are whatever vocabulary was
    set last with ``set_vocabulary``."""

    @configurable
    def __init__(
        self,
        *,
        embedding_provider: ClassEmbeddingProvider,
        train_vocabulary: Vocabulary,
        train_class_map: List[int],
        word_table: Optional[Callable[[], Vocabulary]] = None,
        num_class_words: int = 0,
        grounding_weight: float = 1.0,
        grounding_temperature: float = 0.1,
        grounding_regions: int = 32,
        grounding_region_source: str = "proposals",
        grid_feature: str = "",
        grounding_loss_form: str = "averaged",
        grid_pooler: Optional[ROIPooler] = None,
        freeze_projection: bool = False,
        contrast_across_processes: bool = True,
        **kwargs,
    ):
        """
        Args:
            embedding_provider: gives class text embeddings for any vocabulary.
            train_vocabulary: the classifier's classes during training.
            train_class_map: dataset class id (``gt_classes``) -> index in train_vocabulary, -1 where
                the class is not trained on (an annotation of it is an error).
            word_table: returns the caption word table (``caption_words`` index it; see
                ``xpseudo.text.caption_word_table``); None disables grounding. Called, and the
                words embedded, at the first grounding step, so evaluation never reads captions.
            num_class_words: the table's first entries that are classes (the rest are plain words).
            grounding_region_source: "proposals" or "grid"; ``grid_feature`` names the feature map
                whose cells are the grid regions (see MODEL.XPM.GROUNDING in xpseudo.config).
            grounding_loss_form: "averaged" or "xpm" (``xpseudo.losses.grounding``).
            grid_pooler: pools grid cells from ``grid_feature`` alone (one cell, one feature-map
                position, as the authors' C5 cells), whatever size FPN's level rule would give them.
            freeze_projection: the region-to-text projection is not trained.
            contrast_across_processes: the grounding contrast is over the caption images of all
                processes (False: of this process only, the authors' release).
        """
        super().__init__(**kwargs)
        self.embedding_provider = embedding_provider
        self.register_buffer("train_class_map", torch.tensor(train_class_map, dtype=torch.long), persistent=False)
        self.grounding_weight = grounding_weight
        self.grounding_temperature = grounding_temperature
        self.grounding_regions = grounding_regions
        if grounding_region_source not in REGION_SOURCES:
            raise ValueError(f"MODEL.XPM.GROUNDING.REGIONS must be one of {REGION_SOURCES}, got {grounding_region_source!r}")
        if grounding_loss_form not in LOSS_FORMS:
            raise ValueError(f"MODEL.XPM.GROUNDING.LOSS must be one of {LOSS_FORMS}, got {grounding_loss_form!r}")
        self.grounding_region_source, self.grounding_loss_form = grounding_region_source, grounding_loss_form
        self.grid_feature = grid_feature or self.roi_heads.box_in_features[-1]
        if self.grid_feature not in self.backbone.output_shape():
            raise ValueError(f"MODEL.XPM.GROUNDING.GRID_FEATURE {self.grid_feature!r} is not a backbone output {sorted(self.backbone.output_shape())}")
        self.grid_pooler = grid_pooler
        self.contrast_across_processes = contrast_across_processes
        if freeze_projection:
            self.roi_heads.box_predictor.projection.requires_grad_(False)
        self.train_vocabulary = train_vocabulary
        self.set_vocabulary(train_vocabulary, "the training classes")
        mask_head = getattr(self.roi_heads, "mask_head", None)
        if hasattr(mask_head, "size_prototypes"):  # one prototype per training class (the student's contrast)
            mask_head.size_prototypes(len(train_vocabulary))
        self.word_table, self.num_class_words = word_table, num_class_words
        self._word_vocabulary: Optional[Vocabulary] = None
        self.register_buffer("_word_embeddings", torch.zeros(0, 1), persistent=False)

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        # the annotated dataset's classes; the grounding pretrainer has none: its caption dataset's
        dataset = cfg.DATASETS.TRAIN[0] if cfg.DATASETS.TRAIN else cfg.XPM.CAPTION_DATASETS[0]
        train = dataset_vocabulary(dataset)
        classes = train.names
        if cfg.MODEL.XPM.TRAIN_CLASSES == "base":
            base = set(MetadataCatalog.get(dataset).get("base_classes", classes))
            classes = [c for c in classes if c in base]
        elif cfg.MODEL.XPM.TRAIN_CLASSES != "all":
            raise ValueError(f"MODEL.XPM.TRAIN_CLASSES must be 'base' or 'all', got {cfg.MODEL.XPM.TRAIN_CLASSES!r}")
        grounding = cfg.MODEL.XPM.GROUNDING
        word_table, num_class_words = None, 0
        if grounding.ENABLED:
            if not cfg.XPM.CAPTION_DATASETS:
                raise ValueError("MODEL.XPM.GROUNDING.ENABLED needs caption datasets in XPM.CAPTION_DATASETS")
            if grounding.WORDS not in WORD_MODES:
                raise ValueError(f"MODEL.XPM.GROUNDING.WORDS must be one of {WORD_MODES}, got {grounding.WORDS!r}")
            caption_classes = dataset_vocabulary(cfg.XPM.CAPTION_DATASETS[0])
            num_class_words = len(caption_classes)
            if grounding.WORDS == "vocabulary":
                word_table = lambda: caption_classes  # noqa: E731
            else:
                word_table = lambda: grounding_data(cfg)[0]  # noqa: E731
        ret.update(
            embedding_provider=build_embedding_provider(cfg),
            train_vocabulary=train.subset(classes),
            train_class_map=[classes.index(c) if c in classes else -1 for c in train.names],
            word_table=word_table,
            num_class_words=num_class_words,
            grounding_weight=grounding.LOSS_WEIGHT,
            grounding_temperature=grounding.TEMPERATURE,
            grounding_regions=grounding.NUM_REGIONS,
            grounding_region_source=grounding.REGIONS,
            grid_feature=grid_feature_name(cfg),
            grounding_loss_form=grounding.LOSS,
            grid_pooler=grid_pooler(cfg, ret["backbone"]),
            freeze_projection=cfg.MODEL.XPM.FREEZE_PROJECTION,
            contrast_across_processes=grounding.CONTRAST_ACROSS_PROCESSES,
        )
        return ret

    def _embeddings(self, vocabulary: Vocabulary, what: str, provider: Optional[ClassEmbeddingProvider] = None) -> torch.Tensor:
        provider = provider or self.embedding_provider
        array = provider(vocabulary, what)
        expected = self.roi_heads.box_predictor.projection.out_features
        if array.shape[1] != expected:
            raise InputError(
                ", ".join(provider.files) or f"the text model {provider.model_name}",
                f"text embeddings for {what} have dimension {array.shape[1]}, the model expects "
                f"MODEL.XPM.EMBEDDING_DIM = {expected}",
            )
        return torch.from_numpy(array).to(self.pixel_mean.device)

    @property
    def word_vocabulary(self) -> Optional[Vocabulary]:
        """The caption word table (None without grounding)."""
        if self._word_vocabulary is None and self.word_table is not None:
            self._word_vocabulary = self.word_table()
        return self._word_vocabulary

    @property
    def word_embeddings(self) -> torch.Tensor:
        """One text embedding per entry of the word table, computed on first use."""
        if self._word_embeddings.shape[0] == 0 and self.word_vocabulary is not None:
            self._word_embeddings = self._word_table_embeddings(self.word_vocabulary)
        return self._word_embeddings

    def _word_table_embeddings(self, table: Vocabulary) -> torch.Tensor:
        # Class words come from the class embeddings (files or cache); plain words of "all" mode
        # are never in an embedding file, so they are computed with the same text model.
        n = self.num_class_words
        parts = [self._embeddings(Vocabulary(table.categories[:n], source=table.source), "the caption classes")]
        if n < len(table):
            plain = Vocabulary(table.categories[n:], source=table.source)
            parts.append(self._embeddings(plain, "the plain caption words", self.embedding_provider.without_files()))
        return torch.cat(parts)

    def set_vocabulary(self, vocabulary, what: str = "the vocabulary") -> Vocabulary:
        """Classify into these classes from now on (output class i = the vocabulary's class i).
        ``vocabulary``: a Vocabulary, a list of names, comma-separated names, or a vocabulary file
        (names, synonyms, prompts; see ``xpseudo.text.vocabulary``). Returns the Vocabulary."""
        vocabulary = Vocabulary.parse(vocabulary, what)
        self.roi_heads.set_class_embeddings(self._embeddings(vocabulary, what))
        self.vocabulary = vocabulary
        return vocabulary

    def forward(self, batched_inputs: List[Dict]):
        if not self.training:
            return self.inference(batched_inputs)
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        annotated, captioned = self._split_batch(batched_inputs)
        losses = {}
        if annotated:
            losses.update(self._detection_losses(batched_inputs, images, features, annotated))
        if self.word_table is not None:
            # the key is always there: detectron2 averages each loss over processes by name
            losses["loss_grounding"] = self.grounding_weight * self._grounding_loss(batched_inputs, images, features, captioned)
        return losses

    @staticmethod
    def _split_batch(batched_inputs: List[Dict]):
        """Indices of the annotated images and of the caption images (loops, not filtered
        comprehensions, which TorchScript cannot compile)."""
        annotated, captioned = [], []
        for i, x in enumerate(batched_inputs):
            if "instances" in x:
                annotated.append(i)
            elif x.get("caption_words"):
                captioned.append(i)
        return annotated, captioned

    @staticmethod
    def _subset(images: ImageList, features: Dict[str, torch.Tensor], indices: List[int]):
        index = torch.tensor(indices, device=images.tensor.device)
        return (
            ImageList(images.tensor[index], [images.image_sizes[i] for i in indices]),
            {k: v[index] for k, v in features.items()},
        )

    def _detection_losses(self, batched_inputs, images, features, indices):
        images, features = self._subset(images, features, indices)
        gt_instances = [batched_inputs[i]["instances"].to(self.device) for i in indices]
        for instances in gt_instances:
            classes = self.train_class_map[instances.gt_classes]
            if (classes < 0).any():
                bad = instances.gt_classes[classes < 0][0].item()
                raise ValueError(f"an annotation of class id {bad} is not among the training classes {self.train_vocabulary.names}")
            instances.gt_classes = classes
        proposals, proposal_losses = self.proposal_generator(images, features, gt_instances)
        _, detector_losses = self.roi_heads(images, features, proposals, gt_instances)
        return {**proposal_losses, **detector_losses}

    def _grounding_loss(self, batched_inputs, images, features, indices):
        regions, words = [], []
        if indices:
            images, features = self._subset(images, features, indices)
            boxes = self._grounding_boxes(images, features)
            if self.grounding_region_source == "grid":
                embeddings = self.roi_heads.embed_pooled(self.grid_pooler([features[self.grid_feature]], boxes))
            else:
                embeddings = self.roi_heads.region_embeddings(features, boxes)
            regions = embeddings.split([len(b) for b in boxes])
            words = [self.word_embeddings[torch.as_tensor(batched_inputs[i]["caption_words"], device=self.device)] for i in indices]
        # By default the contrast is over the caption images of all processes (one image per GPU
        # would be a batch of one, whose loss is zero); a process without caption images still
        # takes part. Per process, DDP's gradient average is already the mean of the local losses.
        dim = self.roi_heads.box_predictor.projection.out_features
        region_batch, region_mask = _pad(regions, dim, self.device)
        word_batch, word_mask = _pad(words, dim, self.device)
        if self.contrast_across_processes:
            region_batch, region_mask = gather_padded(region_batch, region_mask)
            word_batch, word_mask = gather_padded(word_batch, word_mask)
        if region_batch.shape[0] == 0:
            return features[next(iter(features))].sum() * 0
        loss = grounding_loss(region_batch, region_mask, word_batch, word_mask, self.grounding_temperature, self.grounding_loss_form)
        return scale_for_ddp(loss) if self.contrast_across_processes else loss

    def _grounding_boxes(self, images: ImageList, features: Dict[str, torch.Tensor]) -> List[Boxes]:
        """Each caption image's regions (see MODEL.XPM.GROUNDING.REGIONS)."""
        if self.grounding_region_source == "grid":
            stride = self.backbone.output_shape()[self.grid_feature].stride
            return [grid_cells(h, w, stride, self.grounding_regions, self.device) for h, w in images.image_sizes]
        with _inference_mode(self.proposal_generator):
            proposals, _ = self.proposal_generator(images, features, None)
        boxes = []
        for p, (h, w) in zip(proposals, images.image_sizes):
            whole = torch.tensor([[0.0, 0.0, w, h]], device=self.device)
            boxes.append(Boxes(torch.cat([whole, p.proposal_boxes.tensor[: self.grounding_regions]])))
        return boxes


REGION_SOURCES = ("proposals", "grid")


def grid_feature_name(cfg) -> str:
    return cfg.MODEL.XPM.GROUNDING.GRID_FEATURE or cfg.MODEL.ROI_HEADS.IN_FEATURES[-1]


def grid_pooler(cfg, backbone) -> Optional[ROIPooler]:
    """The box head's pooling, on the grid feature map alone (None without grid grounding)."""
    name = grid_feature_name(cfg)
    if cfg.MODEL.XPM.GROUNDING.REGIONS != "grid" or name not in backbone.output_shape():
        return None  # (an unknown name is reported by the model with the other choices)
    box_head = cfg.MODEL.ROI_BOX_HEAD
    return ROIPooler(output_size=box_head.POOLER_RESOLUTION, scales=(1.0 / backbone.output_shape()[name].stride,),
                     sampling_ratio=box_head.POOLER_SAMPLING_RATIO, pooler_type=box_head.POOLER_TYPE)


def grid_cells(height: int, width: int, stride: int, keep: int, device=None) -> Boxes:
    """The cells of a stride-``stride`` feature map over a ``height`` x ``width`` image (clipped to
    it), ``keep`` of them at random (all when there are fewer), in row-major order."""
    rows, cols = -(-height // stride), -(-width // stride)
    y, x = torch.meshgrid(torch.arange(rows, device=device), torch.arange(cols, device=device), indexing="ij")
    cells = torch.stack([x, y, x + 1, y + 1], dim=-1).reshape(-1, 4).float() * stride
    cells[:, 2].clamp_(max=width)
    cells[:, 3].clamp_(max=height)
    if keep < len(cells):
        cells = cells[torch.randperm(len(cells), device=device)[:keep].sort().values]
    return Boxes(cells)


def _pad(tensors: List[torch.Tensor], dim: int, device):
    """Stack N_i x D tensors into B x max(N) x D with a validity mask (B may be 0)."""
    if not tensors:
        return torch.zeros(0, 0, dim, device=device), torch.zeros(0, 0, dtype=torch.bool, device=device)
    longest = max(t.shape[0] for t in tensors)
    batch = torch.stack([F.pad(t, (0, 0, 0, longest - t.shape[0])) for t in tensors])
    mask = torch.stack([torch.arange(longest, device=batch.device) < t.shape[0] for t in tensors])
    return batch, mask
