"""An open_clip model for CLIP-ES: built by name (pretrained tag, local file or random init) and
its text tower turned into class embeddings (prompt templates, synonym fusion)."""
import os
from typing import List, Sequence

import open_clip
import torch
import torch.nn.functional as F

from xpseudo.text.vocabulary import Vocabulary


def build_clip(name: str, pretrained: str = "none", config_file: str = "", seed: int = 0, device: str = "cpu"):
    """(model, tokenizer) in eval mode. ``pretrained``: an open_clip tag ("openai"), a checkpoint
    file, or "none"/"" for a random init from ``seed``. ``config_file``: an architecture JSON that
    open_clip registers under its file name first (a small model for tests, a custom one)."""
    if config_file:
        if not os.path.isfile(config_file):
            raise FileNotFoundError(f"CLIPES.MODEL_CONFIG_FILE {config_file} does not exist")
        open_clip.add_model_config(config_file)
    if pretrained in ("", "none"):
        torch.manual_seed(seed)
        pretrained = None
    model = open_clip.create_model(name, pretrained=pretrained, device=device)
    if not isinstance(model.visual, open_clip.transformer.VisionTransformer):
        raise ValueError(f"CLIP-ES needs a ViT image tower (its attention gives the affinity); {name} has {type(model.visual).__name__}")
    model.eval()
    return model, open_clip.get_tokenizer(name)


@torch.no_grad()
def encode_phrases(model, tokenizer, phrases: Sequence[str]) -> torch.Tensor:
    """L2-normalised text embeddings, one row per phrase."""
    device = next(model.parameters()).device
    return F.normalize(model.encode_text(tokenizer(list(phrases)).to(device)).float(), dim=-1)


def class_embeddings(model, tokenizer, vocabulary: Vocabulary, template: str, fuse_synonyms: bool = True) -> torch.Tensor:
    """K x D: each class's prompted name, or (``fuse_synonyms``) the normalised mean of its name's
    and its synonyms' embeddings."""
    rows = []
    for entry in vocabulary:
        names = list(entry.names) if fuse_synonyms else [entry.name]
        rows.append(F.normalize(encode_phrases(model, tokenizer, [template.format(n) for n in names]).mean(0), dim=0))
    return torch.stack(rows)


def phrase_embeddings(model, tokenizer, words: List[str], template: str) -> torch.Tensor:
    return encode_phrases(model, tokenizer, [template.format(w) for w in words])
