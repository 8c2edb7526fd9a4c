"""Softmax GradCAM of a CLIP ViT's image-text score, and its attention maps.

The image goes through the ViT block by block. The tokens entering the last block are the GradCAM
layer; the attention weights of the last few blocks (recomputed from each block's own q and k
projections, heads averaged) are kept for the affinity refinement. The image embedding is scored
against the offered classes' text embeddings and background prompts, softmax over those alone; the
class map of class c is ReLU(sum_d g_d a_nd) over the patch tokens n, where a are the GradCAM
layer's patch tokens and g the mean over patches of d p_c / d a, p_c the class's softmax
probability. A class not offered takes no part in the softmax and has no map (zeros).
"""
from dataclasses import dataclass
from typing import List, Tuple

import torch
import torch.nn.functional as F


@dataclass
class ViTPass:
    tokens: torch.Tensor  # 1 x (1 + N) x D entering the last block, requires grad
    embedding: torch.Tensor  # E, the image embedding (not normalised), a function of ``tokens``
    attentions: List[torch.Tensor]  # per kept block, N x N patch-to-patch attention, heads averaged
    grid: Tuple[int, int]  # patch rows and columns


def _check_vit(visual) -> None:
    for name in ("_embeds", "_pool", "transformer", "proj"):
        if not hasattr(visual, name):
            raise TypeError(f"the CLIP image tower has no {name!r}: CLIP-ES supports open_clip's VisionTransformer (open_clip >= 2.24)")
    if getattr(visual, "attn_pool", None) is not None:
        raise TypeError("CLIP-ES needs a ViT pooled by its class token (no attention pooling)")


def attention_weights(block, x: torch.Tensor) -> torch.Tensor:
    """B x L x L attention of an open_clip ResidualAttentionBlock on its input x (B x L x D),
    averaged over heads: softmax(q k^T / sqrt(d_head)) with the block's own projections."""
    attn = block.attn
    q, k, _ = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    b, length, dim = q.shape
    heads = attn.num_heads
    q = q.reshape(b, length, heads, dim // heads).transpose(1, 2)
    k = k.reshape(b, length, heads, dim // heads).transpose(1, 2)
    return torch.softmax(q @ k.transpose(-1, -2) / (dim // heads) ** 0.5, dim=-1).mean(1)


def vit_pass(visual, image: torch.Tensor, attention_blocks: int) -> ViTPass:
    """``image``: 1 x 3 x H x W, normalised as the model expects, H and W its input size."""
    _check_vit(visual)
    if not getattr(visual.transformer, "batch_first", True):
        raise TypeError("CLIP-ES reads batch-first open_clip transformers")
    blocks = list(visual.transformer.resblocks)
    keep_from = len(blocks) - max(attention_blocks, 0)
    attentions = []
    with torch.no_grad():
        x = visual._embeds(image)
        for i, block in enumerate(blocks[:-1]):
            if i >= keep_from:
                attentions.append(attention_weights(block, x)[0, 1:, 1:])
            x = block(x)
        if len(blocks) - 1 >= keep_from:
            attentions.append(attention_weights(blocks[-1], x)[0, 1:, 1:])
    tokens = x.detach().requires_grad_(True)
    with torch.enable_grad():
        pooled, _ = visual._pool(blocks[-1](tokens))
        embedding = (pooled @ visual.proj if visual.proj is not None else pooled)[0]
    patch = visual.patch_size if isinstance(visual.patch_size, tuple) else (visual.patch_size,) * 2
    grid = (image.shape[-2] // patch[0], image.shape[-1] // patch[1])
    return ViTPass(tokens, embedding, attentions, grid)


def softmax_grad_cam(vit: ViTPass, class_texts: torch.Tensor, background_texts: torch.Tensor, logit_scale: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Class maps (C x rows x cols, >= 0) for the C offered classes, and their softmax
    probabilities (C), the softmax over the offered classes and the background prompts."""
    texts = torch.cat([class_texts, background_texts]).to(vit.embedding.dtype)
    with torch.enable_grad():
        logits = logit_scale * F.normalize(vit.embedding, dim=0) @ texts.t()
        probabilities = logits.softmax(0)
        maps = []
        for c in range(len(class_texts)):
            (grad,) = torch.autograd.grad(probabilities[c], vit.tokens, retain_graph=True)
            patches, grad = vit.tokens[0, 1:].detach(), grad[0, 1:]
            maps.append(F.relu(patches @ grad.mean(0)).reshape(vit.grid))
    empty = vit.tokens.new_zeros((0,) + tuple(vit.grid))
    return (torch.stack(maps) if maps else empty), probabilities[: len(class_texts)].detach()
