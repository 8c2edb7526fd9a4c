"""Vocabulary files: the classes a model knows, with synonyms.

A vocabulary file is either a JSON list of categories ``{"id", "name", "synonyms"?}``, an object
``{"categories": [...], "prompts": ["a photo of a {}.", ...]?}`` (prompts: the templates its
classes are embedded with), or any COCO/LVIS annotation JSON, whose ``categories`` are used (LVIS
lists synonyms per category).
"""
import os
import re
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Sequence, Tuple

from xpseudo.utils.io import InputError, load_json, require_keys

_PARENTHESISED = re.compile(r"\([^)]*\)")
_WORD = re.compile(r"[^\W_]+")


def display_name(name: str) -> str:
    """Human-readable form of a class name: ``television_set`` -> ``television set``."""
    return " ".join(name.replace("_", " ").split())


def name_to_words(name: str) -> Tuple[str, ...]:
    """Words a caption uses for a class name: lower case, LVIS qualifiers like ``(vehicle)`` dropped,
    underscores, hyphens and punctuation as word breaks."""
    return tuple(_WORD.findall(_PARENTHESISED.sub(" ", name).lower()))


@dataclass(frozen=True)
class Category:
    id: int
    name: str
    synonyms: Tuple[str, ...] = field(default_factory=tuple)

    @property
    def names(self) -> Tuple[str, ...]:
        """The name followed by its synonyms, without repeats."""
        return tuple(dict.fromkeys((self.name,) + self.synonyms))


class Vocabulary:
    """An ordered list of categories; index i is the i-th class (contiguous id)."""

    def __init__(self, categories: Sequence[Category], source: str = "<memory>", prompts: Sequence[str] = ()):
        """``prompts``: templates with "{}" this vocabulary's classes are embedded with; empty: the
        config's (MODEL.XPM.PROMPTS)."""
        self.categories: List[Category] = list(categories)
        self.source = source
        self.prompts: Tuple[str, ...] = tuple(prompts)
        if any(not isinstance(p, str) or "{}" not in p for p in self.prompts):
            raise InputError(source, f"'prompts' must be templates with a '{{}}' for the class name, got {list(self.prompts)}")
        self._index: Dict[str, int] = {}
        seen_ids = set()
        for i, c in enumerate(self.categories):
            if c.name in self._index:
                raise InputError(source, f"category {i} repeats the name {c.name!r}")
            if c.id in seen_ids:
                raise InputError(source, f"category {i} ({c.name!r}) repeats the id {c.id}")
            self._index[c.name] = i
            seen_ids.add(c.id)

    @classmethod
    def from_names(cls, names: Iterable[str], synonyms: Dict[str, Sequence[str]] = None):
        """A vocabulary typed by hand; ids are 1, 2, ... in the given order."""
        synonyms = synonyms or {}
        return cls([Category(i + 1, n, tuple(synonyms.get(n, ()))) for i, n in enumerate(names)])

    @classmethod
    def from_file(cls, path: str) -> "Vocabulary":
        data = load_json(path, "vocabulary file")
        entries = data.get("categories") if isinstance(data, dict) else data
        prompts = data.get("prompts", []) if isinstance(data, dict) else []
        if not isinstance(prompts, list):
            raise InputError(path, f"'prompts' must be a list of templates, got {prompts!r}")
        if not isinstance(entries, list):
            raise InputError(path, "expected a list of categories or a JSON object with 'categories'")
        categories = []
        for i, entry in enumerate(entries):
            require_keys(path, entry, ("id", "name"), f"categories[{i}]")
            if not isinstance(entry["id"], int) or not isinstance(entry["name"], str):
                raise InputError(path, f"categories[{i}]: 'id' must be an integer and 'name' a string")
            synonyms = entry.get("synonyms") or []
            if not isinstance(synonyms, list) or not all(isinstance(s, str) for s in synonyms):
                raise InputError(path, f"categories[{i}] ({entry['name']!r}): 'synonyms' must be a list of strings")
            categories.append(Category(entry["id"], entry["name"], tuple(synonyms)))
        return cls(sorted(categories, key=lambda c: c.id), source=path, prompts=prompts)

    @classmethod
    def parse(cls, value, what: str = "the vocabulary") -> "Vocabulary":
        """A vocabulary from what a user gives: a Vocabulary, a list of names, a path to a vocabulary
        file (or any COCO/LVIS annotation file), or comma-separated names ("cat,zebra,kite")."""
        if isinstance(value, Vocabulary):
            return value
        if isinstance(value, (list, tuple)):
            names = [str(n).strip() for n in value]
        elif isinstance(value, str) and (value.lower().endswith(".json") or os.path.isfile(value)):
            return cls.from_file(value)
        elif isinstance(value, str):
            names = [n.strip() for n in value.split(",")]
        else:
            raise TypeError(f"{what}: expected names, a file or a Vocabulary, got {type(value).__name__}")
        if not names or not all(names):
            raise InputError(what, f"needs class names separated by commas, got {value!r}")
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise InputError(what, f"names {duplicates} more than once")
        vocabulary = cls.from_names(names)
        vocabulary.source = what
        return vocabulary

    def to_json(self) -> List[dict]:
        return [{"id": c.id, "name": c.name, "synonyms": list(c.synonyms)} for c in self.categories]

    @property
    def names(self) -> List[str]:
        return [c.name for c in self.categories]

    @property
    def ids(self) -> List[int]:
        return [c.id for c in self.categories]

    def index(self, name: str) -> int:
        if name not in self._index:
            raise KeyError(f"{name!r} is not in the vocabulary from {self.source}")
        return self._index[name]

    def subset(self, names: Iterable[str]) -> "Vocabulary":
        """The categories named, in this vocabulary's order."""
        wanted = set(names)
        unknown = wanted - set(self._index)
        if unknown:
            raise KeyError(f"{sorted(unknown)} not in the vocabulary from {self.source}")
        return Vocabulary([c for c in self.categories if c.name in wanted], source=self.source, prompts=self.prompts)

    def __len__(self) -> int:
        return len(self.categories)

    def __iter__(self):
        return iter(self.categories)

    def __getitem__(self, i: int) -> Category:
        return self.categories[i]
