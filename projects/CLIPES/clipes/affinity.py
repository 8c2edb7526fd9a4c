"""Class maps refined by the ViT's attention (CLIP-ES's class-aware attention affinity; plain torch).

The affinity of two patches is their attention in the last blocks, heads and blocks averaged,
made symmetric. For class c only the patches inside the box around c's confident map
(map >= box_threshold x its maximum) take part: the map is propagated ``steps`` times through the
row-normalised affinity restricted to that box, so it spreads over the patches the ViT itself
groups with the object and stays out of the rest of the image.
"""
from typing import Optional, Sequence

import torch


def patch_affinity(attentions: Sequence[torch.Tensor]) -> torch.Tensor:
    """N x N symmetric affinity from per-block N x N attention maps."""
    if not attentions:
        raise ValueError("the affinity needs the attention of at least one block")
    mean = torch.stack(list(attentions)).mean(0)
    return (mean + mean.t()) / 2


def map_box(grid_map: torch.Tensor, threshold: float) -> torch.Tensor:
    """rows x cols bool: the box around the pixels >= threshold x max (all False for a zero map)."""
    peak = grid_map.max()
    box = torch.zeros_like(grid_map, dtype=torch.bool)
    if peak <= 0:
        return box
    rows, cols = torch.nonzero(grid_map >= threshold * peak, as_tuple=True)
    box[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] = True
    return box


def refine_maps(maps: torch.Tensor, affinity: Optional[torch.Tensor], steps: int, box_threshold: float) -> torch.Tensor:
    """C x rows x cols maps propagated ``steps`` times through ``affinity`` (N x N, N = rows x
    cols) within each class's box; each result is divided by its maximum (zero maps stay zero).
    ``steps`` 0: only that division (``affinity`` may be None)."""
    refined = []
    for grid_map in maps:
        if steps <= 0 or grid_map.max() <= 0:
            refined.append(_unit_max(grid_map))
            continue
        inside = map_box(grid_map, box_threshold).flatten().to(affinity.dtype)
        restricted = affinity * inside[:, None] * inside[None, :]
        transition = restricted / restricted.sum(1, keepdim=True).clamp(min=1e-12)
        values = grid_map.flatten() * inside
        for _ in range(steps):
            values = transition @ values
        refined.append(_unit_max(values.reshape(grid_map.shape)))
    return torch.stack(refined) if refined else maps.clone()


def _unit_max(grid_map: torch.Tensor) -> torch.Tensor:
    peak = grid_map.max()
    return grid_map / peak if peak > 0 else grid_map.clone()
