"""Class text embeddings from an open_clip text tower, stored with a sidecar that says what made them.

``X.npy`` holds a C x D float32 array (one L2-normalised row per class); ``X.json`` names the
classes in order, their ids, the prompts, the model, the pretrained weights, the dimension and a
checksum of the array. Training nodes load these files and never need the network.
"""
import hashlib
import io
import os
from typing import List, Optional, Sequence, Tuple

import numpy as np

from xpseudo.utils.io import InputError, atomic_write, atomic_write_json, load_json

from .vocabulary import Category, Vocabulary, display_name

DEFAULT_TEMPLATES = ("a photo of a {}.",)
# A small ensemble for users who want prompt averaging; any list of "{}" templates works.
ENSEMBLE_TEMPLATES = (
    "a photo of a {}.",
    "a photo of the {}.",
    "a photo of a small {}.",
    "a photo of a large {}.",
    "a close-up photo of a {}.",
    "a bright photo of a {}.",
    "a cropped photo of a {}.",
    "there is a {} in the scene.",
)
FORMAT_VERSION = 1


def class_prompts(category: Category, templates: Sequence[str], average_synonyms: bool) -> List[str]:
    names = category.names if average_synonyms else (category.name,)
    return [t.format(display_name(n)) for n in names for t in templates]


def build_text_encoder(model_name: str, pretrained: Optional[str], seed: int = 0, device: str = "cpu"):
    """(model, tokenizer) from open_clip. ``pretrained`` is an open_clip tag ("openai"), a local
    checkpoint path, or None / "none" for a random initialisation seeded by ``seed`` (tests)."""
    import open_clip
    import torch

    if pretrained in (None, "", "none"):
        # seeded in a forked RNG: the caller's random state (a training run's) stays untouched,
        # so results do not depend on whether the embeddings were cached
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = open_clip.create_model(model_name, pretrained=None, device=device)
    else:
        model = open_clip.create_model(model_name, pretrained=pretrained, device=device)
    model.eval()
    return model, open_clip.get_tokenizer(model_name)


def compute_text_embeddings(
    vocabulary: Vocabulary,
    model=None,
    tokenizer=None,
    model_name: str = "RN50",
    pretrained: Optional[str] = None,
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    average_synonyms: bool = False,
    seed: int = 0,
    device: str = "cpu",
    batch_size: int = 256,
) -> np.ndarray:
    """C x D float32 array: per class, the normalised mean of its normalised prompt embeddings."""
    import torch

    if not templates or any("{}" not in t for t in templates):
        raise ValueError(f"every prompt template needs a '{{}}' for the class name, got {list(templates)}")
    if model is None:
        model, tokenizer = build_text_encoder(model_name, pretrained, seed, device)
    prompts, owner = [], []
    for index, category in enumerate(vocabulary):
        ps = class_prompts(category, templates, average_synonyms)
        prompts += ps
        owner += [index] * len(ps)
    chunks = []
    with torch.no_grad():
        for start in range(0, len(prompts), batch_size):
            tokens = tokenizer(prompts[start : start + batch_size]).to(device)
            chunks.append(torch.nn.functional.normalize(model.encode_text(tokens).float(), dim=-1))
    per_prompt = torch.cat(chunks) if chunks else torch.zeros(0, 1)
    owner_t = torch.tensor(owner, dtype=torch.long)
    sums = torch.zeros(len(vocabulary), per_prompt.shape[1]).index_add_(0, owner_t, per_prompt.cpu())
    return torch.nn.functional.normalize(sums, dim=-1).numpy().astype(np.float32)


def embedding_checksum(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array, dtype=np.float32).tobytes()).hexdigest()


def sidecar_path(npy_path: str) -> str:
    return os.path.splitext(npy_path)[0] + ".json"


def save_text_embeddings(path: str, array: np.ndarray, vocabulary: Vocabulary, **provenance) -> None:
    """Write ``path`` (.npy) and its sidecar atomically; provenance holds model, pretrained,
    templates, average_synonyms and anything else worth recording."""
    if array.shape[0] != len(vocabulary):
        raise ValueError(f"{array.shape[0]} embedding rows for {len(vocabulary)} classes")
    array = np.ascontiguousarray(array, dtype=np.float32)
    buffer = io.BytesIO()
    np.save(buffer, array)
    with atomic_write(path, "wb") as f:
        f.write(buffer.getvalue())
    sidecar = {
        "format_version": FORMAT_VERSION,
        "classes": vocabulary.names,
        "ids": vocabulary.ids,
        "dimension": int(array.shape[1]),
        "checksum": embedding_checksum(array),
        **provenance,
    }
    atomic_write_json(sidecar_path(path), sidecar, indent=2)


def load_text_embeddings(path: str, expected_classes: Optional[Sequence[str]] = None) -> Tuple[np.ndarray, dict]:
    """Load an embedding file and its sidecar; refuse a corrupt file or classes other than expected."""
    meta_path = sidecar_path(path)
    sidecar = load_json(meta_path, "text-embedding sidecar")
    for key in ("classes", "dimension", "checksum"):
        if key not in sidecar:
            raise InputError(meta_path, f"lacks field {key!r}")
    if not os.path.exists(path):
        raise InputError(path, "text-embedding file does not exist")
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as e:
        raise InputError(path, f"not a .npy array ({e})") from e
    if array.ndim != 2 or array.shape != (len(sidecar["classes"]), sidecar["dimension"]):
        raise InputError(
            path,
            f"array shape {array.shape} does not match the sidecar "
            f"({len(sidecar['classes'])} classes x {sidecar['dimension']})",
        )
    if not np.isfinite(array).all():
        rows = sorted({int(r) for r in np.nonzero(~np.isfinite(array))[0]})
        raise InputError(path, f"{len(rows)} rows hold NaN or infinite values (classes {[sidecar['classes'][r] for r in rows[:5]]})")
    if embedding_checksum(array) != sidecar["checksum"]:
        raise InputError(path, f"checksum differs from {meta_path}: the array was changed or is another file's")
    if expected_classes is not None and list(expected_classes) != list(sidecar["classes"]):
        raise InputError(meta_path, describe_class_mismatch(sidecar["classes"], expected_classes))
    return array.astype(np.float32), sidecar


def describe_class_mismatch(found: Sequence[str], expected: Sequence[str]) -> str:
    found, expected = list(found), list(expected)
    missing = [c for c in expected if c not in found]
    extra = [c for c in found if c not in expected]
    if missing or extra:
        return (
            f"embeddings are for other classes: missing {missing[:10]}, not in the dataset {extra[:10]} "
            f"({len(found)} in the file, {len(expected)} expected)"
        )
    first = next(i for i, (a, b) in enumerate(zip(found, expected)) if a != b)
    return f"embeddings list the classes in another order: position {first} is {found[first]!r}, expected {expected[first]!r}"
