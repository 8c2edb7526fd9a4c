"""Vocabularies, caption-to-class matching and text embeddings (no detectron2 needed)."""
from .caption_matcher import CaptionMatcher, WordMatch
from .caption_words import STOP_WORDS, WORD_MODES, caption_word_choices, caption_word_table
from .inflection import inflections, plural_forms, singular_forms
from .vocabulary import Category, Vocabulary, display_name, name_to_words

__all__ = [
    "CaptionMatcher",
    "WordMatch",
    "STOP_WORDS",
    "WORD_MODES",
    "caption_word_table",
    "caption_word_choices",
    "Category",
    "Vocabulary",
    "display_name",
    "name_to_words",
    "inflections",
    "plural_forms",
    "singular_forms",
]

# embeddings needs torch and open_clip only when computing; the loaders are plain numpy.
from .embeddings import (  # noqa: E402
    DEFAULT_TEMPLATES,
    ENSEMBLE_TEMPLATES,
    build_text_encoder,
    compute_text_embeddings,
    load_text_embeddings,
    save_text_embeddings,
)

__all__ += [
    "DEFAULT_TEMPLATES",
    "ENSEMBLE_TEMPLATES",
    "build_text_encoder",
    "compute_text_embeddings",
    "load_text_embeddings",
    "save_text_embeddings",
]
