"""What an image's weak labels (caption words, tags, boxes or points) ask a pseudo-labeler for.

Shared by every labeler (the XPM teacher's, projects/CLIPES's): the wanted classes an image's labels
name, what named them, and for captions how many objects each is said to have.
"""
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from detectron2.structures import BoxMode

from xpseudo.text.caption_matcher import CaptionMatcher
from xpseudo.text.mention_counts import mention_count
from xpseudo.text.vocabulary import Vocabulary


@dataclass
class ImageLabels:
    """What one image's weak labels say, per label: the class (vocabulary index) and what named it."""

    classes: List[int] = field(default_factory=list)
    names: List[str] = field(default_factory=list)  # caption phrase, or the class name
    counts: Optional[List[int]] = None  # regions wanted per class (captions with counts)
    boxes: Optional[List[List[float]]] = None  # XYXY per label, record pixels (box labels)
    points: Optional[List[List[float]]] = None  # (x, y) per label, record pixels (point labels)
    scribbles: Optional[List[List[List[float]]]] = None  # a polyline [[x, y], ...] per label, record pixels
    skipped: int = 0  # labels that cannot name a region (an object with no positive point)


class WeakLabelReader:
    """Reads records as ``register_ovis_dataset`` loads them (contiguous class ids). A labeler sets
    ``vocabulary``, ``wanted`` (class indices to label), ``matcher``, ``counts`` and
    ``plural_count``, or calls ``__init__``."""

    def __init__(self, vocabulary: Vocabulary, wanted_classes: Sequence[int], matcher: Optional[CaptionMatcher] = None,
                 counts: bool = False, plural_count: int = 2):
        if plural_count < 1:
            raise ValueError(f"plural_count must be >= 1, got {plural_count}")
        self.vocabulary, self.wanted = vocabulary, frozenset(wanted_classes)
        self.matcher = matcher or CaptionMatcher(vocabulary)
        self.counts, self.plural_count = counts, plural_count

    def image_labels(self, record: dict, kind: str) -> ImageLabels:
        """The wanted classes an image's weak labels of ``kind`` name ("captions", "tags", "boxes",
        "points" or "scribbles"; records as ``register_ovis_dataset`` loads them, contiguous class ids)."""
        if kind == "captions":
            return self.caption_labels(record["captions"])
        if kind == "tags":
            classes = [c for c in record.get("tags", []) if c in self.wanted]
            return ImageLabels(classes, [self.vocabulary[c].name for c in classes])
        if kind not in ("boxes", "points", "scribbles"):
            raise ValueError(f"unknown weak-label kind {kind!r}")
        labels = ImageLabels(**{kind: []})
        for ann in record.get("annotations", []):
            if ann["category_id"] not in self.wanted:
                continue
            if kind == "boxes":
                labels.boxes.append(BoxMode.convert(list(ann["bbox"]), ann.get("bbox_mode", BoxMode.XYWH_ABS), BoxMode.XYXY_ABS))
            elif kind == "scribbles":
                labels.scribbles.append([list(map(float, v)) for v in ann["scribble"]])
            else:
                clicked = [p for p, positive in zip(ann["point_coords"], ann["point_labels"]) if positive]
                if not clicked:  # only points outside the object: nothing to pick with
                    labels.skipped += 1
                    continue
                # PointSup stores the clicked pixel's index; its centre is half a pixel further
                labels.points.append([clicked[0][0] + 0.5, clicked[0][1] + 0.5])
            labels.classes.append(ann["category_id"])
            labels.names.append(self.vocabulary[ann["category_id"]].name)
        return labels

    def caption_labels(self, captions: Sequence[str]) -> ImageLabels:
        """The wanted classes an image's captions name, in order of first mention, for each the
        caption phrase that named it first and, with ``counts``, the largest count any caption
        gives it (captions describe the whole image; one that says "two stars" is not contradicted
        by another that says "a star")."""
        classes: Dict[int, str] = {}
        counts: Dict[int, int] = {}
        for caption in captions:
            words = self.matcher.words(caption) if self.counts else None
            for match in self.matcher.find(caption):
                c = match.class_index
                if c not in self.wanted:
                    continue
                classes.setdefault(c, match.phrase)
                if self.counts:
                    counts[c] = max(counts.get(c, 1), mention_count(words, match, self.vocabulary[c].names, self.plural_count))
        return ImageLabels(list(classes), list(classes.values()), [counts[c] for c in classes] if self.counts else None)

