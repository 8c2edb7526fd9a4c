"""How many objects a caption's class mention names: "two stars" -> 2, "stars" -> several, "a star" -> 1.

The count decides how many regions the labeler gives a class word. A number word (or digit) up to
two words before the noun counts ("two red stars"); a plural noun or a vague quantifier without one
("stars", "several stars") means "more than one, how many unknown", given as ``plural_count``.
The look-back stops at words that start another phrase ("a dog and stars": "stars" is not counted
by "a"), so a count never leaks across a list.
"""
from typing import Iterable, Sequence

from .caption_matcher import WordMatch
from .inflection import plural_forms
from .vocabulary import name_to_words

NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
                "ten": 10, "eleven": 11, "twelve": 12, "both": 2, "pair": 2, "couple": 2}
VAGUE_PLURALS = {"several", "many", "some", "few", "multiple", "various", "numerous", "lots", "plenty", "group", "bunch"}
# words that begin a new phrase: a number before them counts something else
PHRASE_BREAKS = {"a", "an", "the", "and", "or", "with", "on", "in", "next", "beside", "near", "by", "to"}
LOOK_BACK = 2  # words between a number and its noun ("two small red cars" is beyond it: "two" is 3 back)
MAX_DIGIT_COUNT = 20  # "2018" in a caption is a year, not a count


def is_plural_mention(phrase: str, names: Iterable[str]) -> bool:
    """Whether ``phrase`` (the caption's matched words) is a plural of one of the class ``names``
    and not the name itself ("sheep", plural and singular alike, counts as singular)."""
    last = phrase.split(" ")[-1]
    singular_forms = set()
    plurals = set()
    for name in names:
        words = name_to_words(name)
        if words:
            singular_forms.add(words[-1])
            plurals |= plural_forms(words[-1])
    return last in plurals and last not in singular_forms


def mention_count(words: Sequence[str], match: WordMatch, names: Iterable[str], plural_count: int) -> int:
    """Objects named by ``match`` in the caption's lower-case ``words`` (``CaptionMatcher.words``):
    the nearest number word before it, else ``plural_count`` for a plural or vague quantity, else 1."""
    if plural_count < 1:
        raise ValueError(f"plural_count must be >= 1, got {plural_count}")
    for position in range(match.start - 1, max(match.start - 1 - LOOK_BACK, -1), -1):
        word = words[position]
        if word in NUMBER_WORDS:
            return NUMBER_WORDS[word]
        if word.isascii() and word.isdigit() and 1 <= int(word) <= MAX_DIGIT_COUNT:  # "²" is a digit to str.isdigit, not to int()
            return int(word)
        if word in VAGUE_PLURALS:
            return plural_count
        if word in PHRASE_BREAKS:
            break
    return plural_count if is_plural_mention(match.phrase, names) else 1
