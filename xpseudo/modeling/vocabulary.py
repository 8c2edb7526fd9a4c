"""The vocabulary of a registered dataset and the text-embedding provider a config describes."""
from typing import Optional

from detectron2.data import MetadataCatalog

from xpseudo.text.caption_matcher import CaptionMatcher
from xpseudo.text.embedding_cache import ClassEmbeddingProvider
from xpseudo.text.vocabulary import Vocabulary


def dataset_vocabulary(dataset_name: str) -> Vocabulary:
    """The dataset's classes in ``thing_classes`` order, with synonyms where its vocabulary file
    has them (any detectron2 dataset with ``thing_classes`` works)."""
    metadata = MetadataCatalog.get(dataset_name)
    classes = metadata.thing_classes
    source = metadata.get("vocabulary_file")
    if not source:
        return Vocabulary.from_names(classes)
    vocabulary = Vocabulary.from_file(source)
    return Vocabulary([vocabulary[vocabulary.index(name)] for name in classes], source=source)


def dataset_caption_matcher(dataset_name: str) -> CaptionMatcher:
    """Matches captions to the dataset's classes; names of the other classes of its
    ``caption_vocabulary_file`` (if any) are blockers (see CaptionMatcher)."""
    vocabulary = dataset_vocabulary(dataset_name)
    source = MetadataCatalog.get(dataset_name).get("caption_vocabulary_file")
    blockers = []
    if source:
        own = set(vocabulary.names)
        blockers = [n for c in Vocabulary.from_file(source) if c.name not in own for n in c.names]
    return CaptionMatcher(vocabulary, blockers=blockers)


def build_embedding_provider(cfg) -> ClassEmbeddingProvider:
    xpm = cfg.MODEL.XPM
    files = xpm.TEXT_EMBEDDINGS.split(",") if xpm.TEXT_EMBEDDINGS else ()
    return ClassEmbeddingProvider(
        files=files,
        model_name=xpm.TEXT_MODEL,
        pretrained=xpm.TEXT_PRETRAINED,
        seed=xpm.TEXT_SEED,
        templates=xpm.PROMPTS,
        average_synonyms=xpm.AVERAGE_SYNONYMS,
        cache_dir=xpm.EMBEDDING_CACHE_DIR or None,
    )


def default_vocabulary(cfg, dataset: Optional[str] = None) -> Optional[Vocabulary]:
    """The classes a tool uses when the user names none: ``dataset``'s, else those of the config's
    first test dataset; None when neither names classes."""
    for name in ([dataset] if dataset else []) + list(cfg.DATASETS.TEST[:1]):
        if MetadataCatalog.get(name).get("thing_classes"):
            return dataset_vocabulary(name)
    return None
