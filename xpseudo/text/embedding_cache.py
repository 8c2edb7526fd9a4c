"""Class embeddings for any vocabulary: picked from embedding files, or computed once and cached.

The cache key covers everything that changes the numbers (model, weights, seed, prompts, synonym
averaging, class names and synonyms), so a changed vocabulary or prompt never reuses stale rows.
"""
import hashlib
import json
import os
from typing import Dict, Optional, Sequence

import numpy as np

from xpseudo.utils.io import InputError

from .embeddings import DEFAULT_TEMPLATES, build_text_encoder, compute_text_embeddings, load_text_embeddings, save_text_embeddings
from .vocabulary import Vocabulary


def default_cache_dir() -> str:
    return os.environ.get("XPSEUDO_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "xpseudo"))


class ClassEmbeddingProvider:
    def __init__(
        self,
        files: Sequence[str] = (),
        model_name: str = "RN50",
        pretrained: Optional[str] = None,
        seed: int = 0,
        templates: Sequence[str] = DEFAULT_TEMPLATES,
        average_synonyms: bool = False,
        cache_dir: Optional[str] = None,
    ):
        self.files = [f for f in files if f]
        self.model_name, self.pretrained, self.seed = model_name, pretrained, seed
        self.templates, self.average_synonyms = tuple(templates), average_synonyms
        self.cache_dir = cache_dir or default_cache_dir()
        self._rows: Dict[str, np.ndarray] = {}  # class name -> row; the first file naming a class wins
        for path in self.files:
            array, sidecar = load_text_embeddings(path)
            for name, row in zip(sidecar["classes"], array):
                self._rows.setdefault(name, row)
        self._encoder = None

    def without_files(self) -> "ClassEmbeddingProvider":
        """The same text model and prompts, always computing (and caching) rather than reading files."""
        return ClassEmbeddingProvider(
            (), self.model_name, self.pretrained, self.seed, self.templates, self.average_synonyms, self.cache_dir
        )

    def templates_for(self, vocabulary: Vocabulary) -> tuple:
        """The vocabulary's own prompts where its file gives them, else the provider's."""
        return tuple(vocabulary.prompts) or self.templates

    def cache_key(self, vocabulary: Vocabulary) -> str:
        description = {
            "model": self.model_name,
            "pretrained": self.pretrained,
            "seed": self.seed if self.pretrained in (None, "", "none") else None,
            "templates": list(self.templates_for(vocabulary)),
            "average_synonyms": self.average_synonyms,
            "classes": [[c.name] + (list(c.synonyms) if self.average_synonyms else []) for c in vocabulary],
        }
        return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:20]

    def __call__(self, vocabulary: Vocabulary, dataset: str = "the dataset") -> np.ndarray:
        """len(vocabulary) x D float32, one L2-normalised row per class, in vocabulary order."""
        if self.files:
            missing = [n for n in vocabulary.names if n not in self._rows]
            if missing:
                raise InputError(
                    ", ".join(self.files),
                    f"no text embedding for {', '.join(repr(n) for n in missing[:10])}{' ...' if len(missing) > 10 else ''} "
                    f"({len(missing)} of the {len(vocabulary)} classes of {dataset}); dump embeddings for them with "
                    "tools/dump_text_embeddings.py, or leave MODEL.XPM.TEXT_EMBEDDINGS empty to compute them",
                )
            return np.stack([self._rows[n] for n in vocabulary.names]).astype(np.float32)
        path = os.path.join(self.cache_dir, f"text_embeddings_{self.model_name}_{self.cache_key(vocabulary)}.npy")
        if os.path.exists(path):
            return load_text_embeddings(path, expected_classes=vocabulary.names)[0]
        if self._encoder is None:
            self._encoder = build_text_encoder(self.model_name, self.pretrained, self.seed)
        model, tokenizer = self._encoder
        templates = self.templates_for(vocabulary)
        array = compute_text_embeddings(vocabulary, model, tokenizer, templates=templates, average_synonyms=self.average_synonyms)
        save_text_embeddings(
            path, array, vocabulary, model=self.model_name, pretrained=self.pretrained, prompts=list(templates),
            average_synonyms=self.average_synonyms, seed=self.seed,
        )
        return array
