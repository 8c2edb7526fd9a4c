"""The vocabulary of a registered dataset and the text-embedding provider a config describes."""
from detectron2.data import MetadataCatalog

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
