"""Which region each caption word labels: the scoring and selection math of XPM stage 3.

Plain torch on constructed or real tensors; the detectron2 labeler feeds it the teacher's region
embeddings and the caption's word embeddings.
"""
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torchvision.ops import box_iou


ASSIGNMENT_CHOICES = ("per_word", "exclusive")


@dataclass(frozen=True)
class SelectionConfig:
    top_k: int = 1  # regions per word (XPM: 1, the best one)
    min_score: float = 0.0  # drop pairs whose confidence is below this (XPM: no threshold)
    deduplicate: bool = False  # a region claimed by several words goes to its best word only
    temperature: float = 1.0  # confidence = sigmoid(S / temperature)
    # a word's further picks must overlap its earlier ones by at most this box IoU (1: no
    # suppression, the authors' top-k); used where boxes are given and a word wants several regions
    pick_iou: float = 1.0
    # how words share an image's regions: "per_word", each word picks on its own (the authors'), or
    # "exclusive", one object per pick across all words (see select_regions)
    assignment: str = "per_word"

    def __post_init__(self):
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0 < self.pick_iou <= 1:
            raise ValueError(f"pick_iou must be in (0, 1], got {self.pick_iou}")
        if self.assignment not in ASSIGNMENT_CHOICES:
            raise ValueError(f"assignment must be one of {ASSIGNMENT_CHOICES}, got {self.assignment!r}")


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


def restricted_class_probabilities(regions: torch.Tensor, words: torch.Tensor, background: torch.Tensor, temperature: float) -> torch.Tensor:
    """The teacher's classifier restricted to the image's named classes: softmax over
    ``<region, word> / temperature`` for the W words plus the background embedding, P x W (the
    background column dropped). A region that is no object puts its mass on background, so it loses
    every word; the probability is the pick's confidence. Words must be distinct classes."""
    classifier = torch.cat([words, background.reshape(1, -1)])
    return torch.softmax(region_word_scores(regions, classifier) / temperature, dim=1)[:, : words.shape[0]]


def select_regions(
    scores: torch.Tensor,
    config: SelectionConfig = SelectionConfig(),
    *,
    counts: Optional[Sequence[int]] = None,
    boxes: Optional[torch.Tensor] = None,
    confidences: Optional[torch.Tensor] = None,
) -> Selection:
    """Pick regions for words from a P x W score matrix.

    Each word takes its ``top_k`` highest-scoring regions, or ``counts[w]`` of them where counts
    are given ("two stars" -> 2; ties: the lower region index first, so results do not depend on
    the sort implementation). With ``boxes`` (P x 4, XYXY) and ``config.pick_iou`` < 1, a region
    overlapping one of the word's earlier picks by more than that IoU is passed over (one object is
    not labelled twice for "two"). Confidence is ``confidences`` at the pair (P x W, e.g.
    ``restricted_class_probabilities``), else sigmoid(S / temperature); pairs under ``min_score``
    are dropped, so a word may get no region. With ``deduplicate``, a region kept by several words
    stays only with the word that scores it highest (ties: the lower word index); the other words
    keep their remaining picks and are not given a replacement.

    With ``config.assignment == "exclusive"`` the words share the image's objects instead
    (``_exclusive_picks``): pairs are taken best confidence first, over all words, and a region
    that is taken, or overlaps a pick of any word by more than ``pick_iou`` (with ``boxes``), is
    passed over. A word's column maximum may be an object another word explains better (a novel
    word's probabilities are low everywhere, so its best region is often a named base object);
    the word then takes its best region still free.
    """
    num_regions, num_words = scores.shape
    device = scores.device
    wanted = [config.top_k] * num_words if counts is None else [int(c) for c in counts]
    if len(wanted) != num_words or any(c < 1 for c in wanted):
        raise ValueError(f"counts must give each of the {num_words} words at least 1 region, got {list(counts)}")
    if num_regions == 0 or num_words == 0:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return Selection(empty, empty.clone(), scores.new_zeros(0), scores.new_zeros(0))
    if config.assignment == "exclusive":
        confidence = confidences if confidences is not None else torch.sigmoid(scores / config.temperature)
        regions, words = _exclusive_picks(confidence, wanted, boxes, config)
        order = torch.sort(words, stable=True).indices  # by word; taken best first, so best first within a word
        regions, words = regions[order], words[order]
        return Selection(regions, words, scores[regions, words], confidence[regions, words])
    # stable descending sort per word: equal scores keep region order
    order = torch.sort(scores.t(), dim=1, descending=True, stable=True).indices  # W x P
    suppress = boxes is not None and config.pick_iou < 1 and max(wanted) > 1
    overlaps = box_iou(boxes, boxes) if suppress else None
    regions_of_word = []
    for w, k in enumerate(wanted):
        if overlaps is None:
            regions_of_word.append(order[w, :k])
            continue
        taken = []
        for r in order[w].tolist():
            if len(taken) == k:
                break
            if not taken or overlaps[r, taken].max() <= config.pick_iou:
                taken.append(r)
        regions_of_word.append(torch.as_tensor(taken, dtype=torch.long, device=device))
    regions = torch.cat(regions_of_word)
    words = torch.cat([torch.full((len(r),), w, dtype=torch.long, device=device) for w, r in enumerate(regions_of_word)])
    picked = scores[regions, words]
    confidence = confidences[regions, words] if confidences is not None else torch.sigmoid(picked / config.temperature)
    keep = confidence >= config.min_score
    if config.deduplicate:
        keep &= _best_word_per_region(regions, words, picked)
    return Selection(regions[keep], words[keep], picked[keep], confidence[keep])


def select_point_regions(scores: torch.Tensor, boxes: torch.Tensor, points: torch.Tensor, confidences: Optional[torch.Tensor] = None,
                         config: SelectionConfig = SelectionConfig()) -> Selection:
    """One region per clicked point: the best-scoring region whose box contains the point.

    ``scores``: P x N, column n scoring the regions for point n's class; ``boxes`` P x 4 (XYXY);
    ``points`` N x 2 (x, y) in the boxes' pixels. Regions that also contain another point are used
    only where no region holds this point alone (two clicked objects are two instances, not one box
    around both). A point inside no region gets nothing (the caller counts it). ``words`` of the
    result are point indices. Confidence and ``min_score`` as in ``select_regions``.
    """
    num_points = points.shape[0]
    device = scores.device
    x, y = points[:, 0], points[:, 1]
    contains = (boxes[:, None, 0] <= x) & (x <= boxes[:, None, 2]) & (boxes[:, None, 1] <= y) & (y <= boxes[:, None, 3])  # P x N
    others = contains.sum(dim=1, keepdim=True) - contains.long()  # other points inside each region
    alone = contains & (others == 0)
    candidates = torch.where(alone.any(dim=0, keepdim=True), alone, contains)
    masked = torch.where(candidates, scores, torch.full_like(scores, float("-inf")))
    # stable sort: among equal scores the lower region index wins
    best = torch.sort(masked.t(), dim=1, descending=True, stable=True).indices[:, 0] if num_points and len(boxes) else None
    found = candidates.any(dim=0) if best is not None else torch.zeros(num_points, dtype=torch.bool, device=device)
    words = torch.arange(num_points, device=device)[found]
    regions = best[found] if best is not None else torch.zeros(0, dtype=torch.long, device=device)
    picked = scores[regions, words]
    confidence = confidences[regions, words] if confidences is not None else torch.sigmoid(picked / config.temperature)
    keep = confidence >= config.min_score
    return Selection(regions[keep], words[keep], picked[keep], confidence[keep])


def select_scribble_regions(coverage: torch.Tensor, leakage: torch.Tensor, confidences: torch.Tensor, scores: Optional[torch.Tensor] = None,
                            config: SelectionConfig = SelectionConfig()) -> Selection:
    """One region per scribble: the region whose mask covers most of the stroke and least of the
    other scribbles.

    ``coverage``: P x N, the fraction of scribble n's sampled points inside region p's mask;
    ``leakage``: P x N, the fraction of the other scribbles' points (other objects, whatever their
    class) inside that mask; ``confidences``: P x N in [0, 1], region p's confidence for scribble
    n's class. The pick maximises coverage - leakage; among equal values the higher confidence,
    then the lower region index. A scribble that no region's mask touches gets nothing (the caller
    counts it). ``words`` of the result are scribble indices; ``scores`` (default: the
    confidences) fill ``Selection.scores``; ``min_score`` applies to the confidence.
    """
    num_regions, num_scribbles = coverage.shape
    device = coverage.device
    scores = confidences if scores is None else scores
    if num_regions == 0 or num_scribbles == 0:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return Selection(empty, empty.clone(), coverage.new_zeros(0), coverage.new_zeros(0))
    quality = torch.where(coverage > 0, coverage - leakage, torch.full_like(coverage, float("-inf")))
    # lexicographic: quality first, confidence second (stable sort keeps the lower region on full ties)
    by_confidence = torch.sort(confidences.t(), dim=1, descending=True, stable=True).indices  # N x P
    by_quality = torch.sort(quality.t().gather(1, by_confidence), dim=1, descending=True, stable=True).indices
    best = by_confidence.gather(1, by_quality)[:, 0]
    found = torch.isfinite(quality[best, torch.arange(num_scribbles, device=device)])
    words = torch.arange(num_scribbles, device=device)[found]
    regions = best[found]
    confidence = confidences[regions, words]
    keep = confidence >= config.min_score
    return Selection(regions[keep], words[keep], scores[regions, words][keep], confidence[keep])


def mask_covers(probabilities: torch.Tensor, boxes: torch.Tensor, points: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Whether each of K points (x, y, image pixels) lies in each of P masks, given as M x M
    probabilities over their boxes (P x 4, XYXY) as a mask head predicts them: P x K bool. A point
    outside a box is outside its mask; inside, the probability is read bilinearly."""
    if len(boxes) == 0 or len(points) == 0:
        return torch.zeros(len(boxes), len(points), dtype=torch.bool, device=probabilities.device)
    x0, y0, x1, y1 = (boxes[:, i : i + 1] for i in range(4))
    u = (points[None, :, 0] - x0) / (x1 - x0).clamp(min=1e-6)  # P x K, 0..1 across the box
    v = (points[None, :, 1] - y0) / (y1 - y0).clamp(min=1e-6)
    grid = torch.stack([u * 2 - 1, v * 2 - 1], dim=-1)[:, None]  # P x 1 x K x 2, grid_sample's -1..1
    sampled = torch.nn.functional.grid_sample(probabilities[:, None], grid, align_corners=False)[:, 0, 0]  # P x K
    in_box = (u >= 0) & (u <= 1) & (v >= 0) & (v <= 1)
    return in_box & (sampled > threshold)


def scribble_points(vertices: torch.Tensor, spacing: float = 1.0) -> torch.Tensor:
    """Points along a polyline (K x 2 vertices, x y) every ``spacing`` pixels or closer, both ends
    included: what a scribble covers."""
    points = [vertices[:1]]
    for a, b in zip(vertices[:-1], vertices[1:]):
        steps = max(int(torch.ceil(torch.linalg.norm(b - a) / spacing).item()), 1)
        t = torch.arange(1, steps + 1, dtype=vertices.dtype, device=vertices.device)[:, None] / steps
        points.append(a + t * (b - a))
    return torch.cat(points)


def _exclusive_picks(confidence: torch.Tensor, wanted: Sequence[int], boxes: Optional[torch.Tensor], config: SelectionConfig):
    """Greedy one-object-per-pick assignment: (regions, words) in the order they were taken."""
    num_regions, num_words = confidence.shape
    # best first over all pairs; ties: lower region, then lower word (row-major order, stable sort)
    order = torch.sort(confidence.reshape(-1), descending=True, stable=True).indices.tolist()
    values = confidence.reshape(-1).tolist()
    # a taken region blocks itself and every region overlapping it by more than pick_iou (one IoU
    # row per pick, not P x P: a few picks among ~1000 proposals)
    blocked = [False] * num_regions
    remaining = list(wanted)
    left = sum(remaining)
    regions, words = [], []
    for flat in order:
        if not left or values[flat] < config.min_score:  # sorted: nothing later passes either
            break
        r, w = divmod(flat, num_words)
        if blocked[r] or not remaining[w]:
            continue
        regions.append(r)
        words.append(w)
        remaining[w] -= 1
        left -= 1
        blocked[r] = True
        if boxes is not None:
            overlapping = (box_iou(boxes[r : r + 1], boxes)[0] > config.pick_iou).tolist()
            blocked = [b or o for b, o in zip(blocked, overlapping)]
    device = confidence.device
    return torch.as_tensor(regions, dtype=torch.long, device=device), torch.as_tensor(words, dtype=torch.long, device=device)


def _best_word_per_region(regions, words, picked) -> torch.Tensor:
    """For each pair, whether no other pair on the same region beats it (higher score, or the same
    score and a lower word index)."""
    same_region = regions[:, None] == regions[None, :]
    beats = (picked[None, :] > picked[:, None]) | ((picked[None, :] == picked[:, None]) & (words[None, :] < words[:, None]))
    return ~(same_region & beats).any(dim=1)
