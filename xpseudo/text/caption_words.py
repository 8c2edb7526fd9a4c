"""The words of captions that the grounding loss ties to regions.

Two modes (``MODEL.XPM.GROUNDING.WORDS``):
- "vocabulary": only mentions of the vocabulary's classes; the word table is the vocabulary.
- "all": class mentions as above, plus every other caption word that is not a stop word, so that
  regions also learn from concepts outside the vocabulary (XPM.md, stage 1). The word table is the
  vocabulary's classes followed by those words, most frequent first.

Either way each image gets the sorted indices of its distinct words in the table (its captions
unioned), class words first so a ``max_words`` cap never drops a class in favour of a plain word.

A third mode, "one_caption" (``caption_word_choices``), keeps the captions apart, as the authors'
stage 1 grounds the words of one caption drawn at random per image and step: each image gets one
word list per caption, every word of it (stop words too, numbers left out), class mentions first.
"""
from collections import Counter
from typing import List, Sequence, Tuple

from .caption_matcher import CaptionMatcher
from .vocabulary import Category, Vocabulary

WORD_MODES = ("vocabulary", "all", "one_caption")

# Function words and caption boilerplate: they name nothing a region could show.
STOP_WORDS = frozenset(
    """
    a an the this that these those there here it its it's they them their theirs he him his she her
    hers we us our you your i me my and or but nor so yet of in on at by for with without from to into
    onto upon over under above below near next beside behind between among through across along around
    against toward towards off up down out about after before during while as than then also very just
    too only some any each every all both either neither other another such same few many much more
    most several one two three four five six seven eight nine ten is are was were be been being am
    has have had having do does did doing can could will would shall should may might must not no
    what which who whom whose when where why how while if because until what's
    photo photograph picture image shot view scene close closeup front side top bottom left right
    """.split()
)


def caption_word_table(
    matcher: CaptionMatcher,
    captions_per_image: Sequence[Sequence[str]],
    mode: str = "vocabulary",
    min_count: int = 1,
    max_words: int = 0,
) -> Tuple[Vocabulary, List[List[int]]]:
    """The word table and, per image, the indices of its words in it.

    Args:
        matcher: finds class mentions (multi-word names, plurals and synonyms count as the class).
        captions_per_image: each image's captions.
        mode: "vocabulary" or "all" (see the module docstring).
        min_count: in "all" mode, a plain word enters the table when this many images use it.
        max_words: keep at most this many words per image (0: no cap).
    """
    if mode not in WORD_MODES or mode == "one_caption":
        raise ValueError(f"caption word mode must be one of {WORD_MODES[:2]} (one_caption: caption_word_choices), got {mode!r}")
    vocabulary = matcher.vocabulary
    classes_per_image, plain_per_image = [], []
    for captions in captions_per_image:
        classes, plain = set(), []
        for caption in captions:
            words = matcher.words(caption)
            covered = set()
            for match in matcher.find(caption):
                classes.add(match.class_index)
                covered.update(range(match.start, match.start + match.length))
            if mode == "all":
                plain += [w for i, w in enumerate(words) if i not in covered and _is_content_word(w)]
        classes_per_image.append(sorted(classes))
        plain_per_image.append(list(dict.fromkeys(plain)))  # distinct, first use first
    table = vocabulary if mode == "vocabulary" else _table_with_plain_words(vocabulary, plain_per_image, min_count)
    index = {c.name: i for i, c in enumerate(table)}
    per_image = []
    for classes, plain in zip(classes_per_image, plain_per_image):
        words = classes + [index[w] for w in plain if w in index and index[w] >= len(vocabulary)]
        per_image.append(words[:max_words] if max_words > 0 else words)
    return table, per_image


def caption_word_choices(
    matcher: CaptionMatcher, captions_per_image: Sequence[Sequence[str]], min_count: int = 1
) -> Tuple[Vocabulary, List[List[List[int]]]]:
    """The word table ("one_caption" mode) and, per image, one list of table indices per caption:
    its class mentions (in order, distinct), then its other words (stop words included, numbers
    left out) that at least ``min_count`` images use. A caption may give an empty list."""
    vocabulary = matcher.vocabulary
    parts_per_image = []  # per image, per caption: (class indices, plain words)
    for captions in captions_per_image:
        parts = []
        for caption in captions:
            words = matcher.words(caption)
            classes, covered = [], set()
            for match in matcher.find(caption):
                if match.class_index not in classes:
                    classes.append(match.class_index)
                covered.update(range(match.start, match.start + match.length))
            parts.append((classes, list(dict.fromkeys(w for i, w in enumerate(words) if i not in covered and not w.isdigit()))))
        parts_per_image.append(parts)
    plain_per_image = [list(dict.fromkeys(w for _, plain in parts for w in plain)) for parts in parts_per_image]
    table = _table_with_plain_words(vocabulary, plain_per_image, min_count)
    index = {c.name: i for i, c in enumerate(table)}
    first_plain = len(vocabulary)
    choices = [[classes + [index[w] for w in plain if index.get(w, -1) >= first_plain] for classes, plain in parts]
               for parts in parts_per_image]
    return table, choices


def _table_with_plain_words(vocabulary: Vocabulary, plain_per_image: Sequence[Sequence[str]], min_count: int) -> Vocabulary:
    """The vocabulary's classes, then the plain words used by at least ``min_count`` images (each
    image's list distinct), most frequent first."""
    class_words = set(n for c in vocabulary for n in c.names)
    counts = Counter(w for words in plain_per_image for w in words if w not in class_words)
    kept = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
    # plain words get ids after the largest class id so the table stays a valid vocabulary
    first_id = max((c.id for c in vocabulary), default=0) + 1
    return Vocabulary(list(vocabulary) + [Category(first_id + i, w) for i, w in enumerate(kept)], source=vocabulary.source)


def _is_content_word(word: str) -> bool:
    return len(word) > 1 and not word.isdigit() and word not in STOP_WORDS
