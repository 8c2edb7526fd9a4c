"""Which region each caption word labels: the scoring and selection math of XPM stage 3.

Plain torch on constructed or real tensors; the detectron2 labeler feeds it the teacher's region
embeddings and the caption's word embeddings.
"""
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SelectionConfig:
    top_k: int = 1  # regions per word (XPM: 1, the best one)
    min_score: float = 0.0  # drop pairs whose confidence is below this (XPM: no threshold)
    deduplicate: bool = False  # a region claimed by several words goes to its best word only
    temperature: float = 1.0  # confidence = sigmoid(S / temperature)

    def __post_init__(self):
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")


@dataclass
class Selection:
    """Selected (region, word) pairs, ordered by word, then by score (best first)."""

    regions: torch.Tensor  # K long, row of the score matrix
    words: torch.Tensor  # K long, column of the score matrix
    scores: torch.Tensor  # K float, S at the pair
    confidences: torch.Tensor  # K float, sigmoid(S / temperature)

    def __len__(self) -> int:
        return self.regions.numel()


def region_word_scores(regions: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
    """S = <region, word>: P x D and W x D -> P x W (rows and columns as given; the teacher's region
    embeddings and the word embeddings are both L2-normalised, so S is a cosine)."""
    if regions.shape[-1] != words.shape[-1]:
        raise ValueError(f"region embeddings have dimension {regions.shape[-1]}, word embeddings {words.shape[-1]}")
    return regions @ words.t()


def select_regions(scores: torch.Tensor, config: SelectionConfig = SelectionConfig()) -> Selection:
    """Pick regions for words from a P x W score matrix.

    Each word takes its ``top_k`` highest-scoring regions (ties: the lower region index first, so
    results do not depend on the sort implementation). Pairs under ``min_score`` confidence are
    dropped, so a word may get no region. With ``deduplicate``, a region kept by several words stays
    only with the word that scores it highest (ties: the lower word index); the other words keep
    their remaining picks and are not given a replacement.
    """
    num_regions, num_words = scores.shape
    k = min(config.top_k, num_regions)
    device = scores.device
    if k == 0 or num_words == 0:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return Selection(empty, empty.clone(), scores.new_zeros(0), scores.new_zeros(0))
    # stable descending sort per word: equal scores keep region order
    order = torch.sort(scores.t(), dim=1, descending=True, stable=True).indices[:, :k]  # W x k
    words = torch.arange(num_words, device=device)[:, None].expand(-1, k).reshape(-1)
    regions = order.reshape(-1)
    picked = scores[regions, words]
    confidences = torch.sigmoid(picked / config.temperature)
    keep = confidences >= config.min_score
    if config.deduplicate:
        keep &= _best_word_per_region(regions, words, picked)
    return Selection(regions[keep], words[keep], picked[keep], confidences[keep])


def _best_word_per_region(regions, words, picked) -> torch.Tensor:
    """For each pair, whether no other pair on the same region beats it (higher score, or the same
    score and a lower word index)."""
    same_region = regions[:, None] == regions[None, :]
    beats = (picked[None, :] > picked[:, None]) | ((picked[None, :] == picked[:, None]) & (words[None, :] < words[:, None]))
    return ~(same_region & beats).any(dim=1)
