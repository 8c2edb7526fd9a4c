"""Find the vocabulary classes a caption names.

Whole words, case-insensitive, singular or plural (irregular ones too), multi-word names and
synonyms; where names overlap the longest wins ("teddy bear" is not also a "bear"). Names of things
that are not classes but contain a class name (COCO's "hot dog" when "dog" is a class and "hot dog"
is not) can be given as blockers: they are matched, so their words are used up, and then dropped.
All variants are expanded once into a phrase table, so matching a caption is a tokenisation plus
one dictionary look-up per word (about 10^5 captions per second on one core).
"""
import re
from dataclasses import dataclass
from typing import Dict, Iterable, List, Sequence, Tuple

from .inflection import inflections
from .vocabulary import Vocabulary, name_to_words

_WORD = re.compile(r"[^\W_]+")

# Priority when two classes produce the same phrase: a name or synonym as written beats a
# generated inflection of another class; any class phrase beats a blocker's.
_WRITTEN, _INFLECTED, _BLOCKER = 0, 1, 2
_BLOCKED = -1  # class index of a blocker's phrases


@dataclass(frozen=True)
class WordMatch:
    class_index: int  # index into the vocabulary
    phrase: str  # the caption's words that matched, lower case ("teddy bears")
    start: int  # first word's position in the caption's word list
    length: int  # number of words


class CaptionMatcher:
    def __init__(self, vocabulary: Vocabulary, use_synonyms: bool = True, blockers: Iterable[str] = ()):
        """``blockers``: names (and synonyms) that are not classes, matched only to be dropped."""
        self.vocabulary = vocabulary
        owners: Dict[str, Tuple[int, int]] = {}  # phrase -> (priority, class index)
        named = [(index, name, False) for index, category in enumerate(vocabulary)
                 for name in (category.names if use_synonyms else (category.name,))]
        for index, name, blocker in named + [(_BLOCKED, name, True) for name in blockers]:
            words = name_to_words(name)
            if not words:
                continue
            variants = [(" ".join(words), _BLOCKER if blocker else _WRITTEN)]
            head = " ".join(words[:-1] + ("",))  # inflect the last word only
            variants += [(head + form, _BLOCKER if blocker else _INFLECTED) for form in inflections(words[-1])]
            for phrase, priority in variants:
                if phrase not in owners or priority < owners[phrase][0]:
                    owners[phrase] = (priority, index)
        self._phrases: Dict[str, int] = {p: index for p, (_, index) in owners.items()}
        # For each first word, the longest phrase starting with it: most words start none, so the
        # scan below does a single look-up for them.
        self._longest_from: Dict[str, int] = {}
        for phrase in self._phrases:
            words = phrase.split(" ")
            self._longest_from[words[0]] = max(self._longest_from.get(words[0], 0), len(words))

    @staticmethod
    def words(caption: str) -> List[str]:
        return _WORD.findall(caption.lower())

    def find(self, caption: str) -> List[WordMatch]:
        """Every class mention in the caption, left to right, longest match first."""
        words = self.words(caption)
        return [WordMatch(c, " ".join(words[s : s + n]), s, n) for c, s, n in self._scan(words) if c != _BLOCKED]

    def classes_in(self, captions: Iterable[str]) -> List[int]:
        """Sorted class indices named by any of the captions (one image's captions are unioned)."""
        found = set()
        for caption in captions:
            found.update(c for c, _, _ in self._scan(_WORD.findall(caption.lower())))
        found.discard(_BLOCKED)
        return sorted(found)

    def _scan(self, words: Sequence[str]) -> List[Tuple[int, int, int]]:
        phrases, longest_from = self._phrases, self._longest_from
        found = []
        i, n = 0, len(words)
        while i < n:
            longest = longest_from.get(words[i])
            if longest:
                for k in range(min(longest, n - i), 0, -1):
                    index = phrases.get(words[i] if k == 1 else " ".join(words[i : i + k]))
                    if index is not None:
                        found.append((index, i, k))
                        i += k
                        break
                else:
                    i += 1
            else:
                i += 1
        return found
