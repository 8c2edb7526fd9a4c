"""Base/novel split files: ``{"base": [class names], "novel": [class names]}``."""
from dataclasses import dataclass
from typing import Dict, List, Sequence

from xpseudo.utils.io import InputError, load_json

SPLITS = ("base", "novel")


@dataclass(frozen=True)
class OvisSplit:
    base: List[str]
    novel: List[str]
    source: str = "<memory>"

    @classmethod
    def from_file(cls, path: str) -> "OvisSplit":
        data = load_json(path, "split file")
        if not isinstance(data, dict):
            raise InputError(path, 'expected an object {"base": [...], "novel": [...]}')
        lists = {}
        for key in SPLITS:
            names = data.get(key)
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise InputError(path, f"field {key!r} must be a list of class names")
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise InputError(path, f"field {key!r} repeats {duplicates}")
            lists[key] = names
        both = sorted(set(lists["base"]) & set(lists["novel"]))
        if both:
            raise InputError(path, f"classes {both} are both base and novel")
        return cls(lists["base"], lists["novel"], source=path)

    def to_json(self) -> Dict[str, List[str]]:
        return {"base": list(self.base), "novel": list(self.novel)}

    @property
    def names(self) -> List[str]:
        return list(self.base) + list(self.novel)

    def check_classes(self, dataset_classes: Sequence[str], dataset: str) -> None:
        """Every split class must be a class of the dataset (``dataset`` names it in the error)."""
        known = set(dataset_classes)
        for key in SPLITS:
            for name in getattr(self, key):
                if name not in known:
                    raise InputError(self.source, f"{key} category {name!r} is not a category of {dataset}")

    def class_ids(self, dataset_classes: Sequence[str], which: str) -> List[int]:
        """Indices in ``dataset_classes`` of the classes of split ``which`` ("base" or "novel")."""
        members = set(getattr(self, which))
        return [i for i, name in enumerate(dataset_classes) if name in members]
