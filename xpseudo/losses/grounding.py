"""Caption-grounding loss (stage 1 of XPM; plain torch, no detectron2).

For image a and caption b, with L2-normalised region embeddings e_i (of a) and word embeddings w_j
(of b), s_ij = <e_i, w_j>. Each word attends over regions (softmax_i of s_ij / T) and each region
over words (softmax_j). A batch of B pairs is scored B x B and trained with cross-entropy in both
directions: the right caption for each image and the right image for each caption. Two forms:

- "averaged" (xpseudo's default): the pair's score is the mean of the word-side and region-side
  attended similarities, one cross-entropy per direction, the two averaged;
- "xpm" (the authors' release, after OVR-CNN): word-side and region-side scores kept apart, each
  trained in both directions: four cross-entropies, summed;
- "noun_to_region" (after text-supervised grouping): one way. Each caption word is
  pulled to its best region of its own image and pushed from every region of the other images.
  Nothing asks a region to match a word, so the own image's other regions (objects the caption
  does not mention, background) take no part in the loss.
"""
import torch
import torch.nn.functional as F

_MASKED = -1e4  # logit of padding; finite so fully padded rows stay NaN-free


LOSS_FORMS = ("averaged", "xpm", "noun_to_region")


def image_caption_score_parts(regions, region_mask, words, word_mask, temperature: float):
    """(word-side, region-side) B_img x B_cap score matrices.

    Args:
        regions: B x R x D (normalised), region_mask: B x R bool (False = padding)
        words: B x W x D (normalised), word_mask: B x W bool
    """
    sim = torch.einsum("ard,bwd->abrw", regions, words)
    logits = sim / temperature
    region_valid = region_mask[:, None, :, None]
    word_valid = word_mask[None, :, None, :]
    word_attention = logits.masked_fill(~region_valid, _MASKED).softmax(dim=2)
    per_word = (word_attention * sim).sum(dim=2)  # a x b x W
    word_side = (per_word * word_mask[None]).sum(-1) / word_mask.sum(-1).clamp(min=1)[None]
    region_attention = logits.masked_fill(~word_valid, _MASKED).softmax(dim=3)
    per_region = (region_attention * sim).sum(dim=3)  # a x b x R
    region_side = (per_region * region_mask[:, None]).sum(-1) / region_mask.sum(-1).clamp(min=1)[:, None]
    return word_side, region_side


def image_caption_scores(regions, region_mask, words, word_mask, temperature: float):
    """B_img x B_cap matrix of scores: the mean of the word-side and region-side scores."""
    word_side, region_side = image_caption_score_parts(regions, region_mask, words, word_mask, temperature)
    return (word_side + region_side) / 2


def _both_directions(scores):
    target = torch.arange(scores.shape[0], device=scores.device)
    return F.cross_entropy(scores, target), F.cross_entropy(scores.t(), target)


def grounding_loss(regions, region_mask, words, word_mask, temperature: float, form: str = "averaged"):
    """Batch contrastive loss in the given ``form`` (see the module docstring); pair i is (image i,
    caption i). Zero for a batch of one."""
    if form not in LOSS_FORMS:
        raise ValueError(f"grounding loss form must be one of {LOSS_FORMS}, got {form!r}")
    if form == "noun_to_region":
        return noun_to_region_loss(regions, region_mask, words, word_mask, temperature)
    word_side, region_side = image_caption_score_parts(regions, region_mask, words, word_mask, temperature)
    if form == "xpm":
        return sum(_both_directions(word_side / temperature)) + sum(_both_directions(region_side / temperature))
    return sum(_both_directions((word_side + region_side) / 2 / temperature)) / 2


def noun_to_region_loss(regions, region_mask, words, word_mask, temperature: float):
    """Mean over the batch's words of -log softmax of (the word's best own region) against (every
    region of the other images); shapes as ``image_caption_score_parts``. Zero for a batch of one."""
    sim = torch.einsum("ard,bwd->abrw", regions, words) / temperature  # image a, caption b, region r, word w
    batch = sim.shape[0]
    own = torch.arange(batch, device=sim.device)
    own_sim = sim[own, own].masked_fill(~region_mask[:, :, None], _MASKED)  # b x R x W
    positive = own_sim.max(dim=1).values  # b x W: each word's best region of its own image
    other_image = ~torch.eye(batch, dtype=torch.bool, device=sim.device)[:, :, None, None]
    negatives = sim.masked_fill(~(other_image & region_mask[:, None, :, None]), _MASKED)  # a x b x R x W
    negatives = negatives.permute(1, 3, 0, 2).reshape(batch, words.shape[1], -1)  # b x W x (a, r)
    logits = torch.cat([positive[..., None], negatives], dim=-1)
    per_word = torch.logsumexp(logits, dim=-1) - positive  # -log softmax of the positive
    weights = word_mask.to(per_word.dtype)
    return (per_word * weights).sum() / weights.sum().clamp(min=1)
