"""English singular/plural forms of nouns, for matching caption words to vocabulary names.

Forms are generated from the vocabulary side only (captions are matched as written), so a rule
that over-generates ("knifes" beside "knives") costs nothing: nobody writes the extra form.
"""
from typing import Set

# Nouns whose plural no suffix rule produces.
_IRREGULAR_PLURALS = {
    "man": "men", "woman": "women", "person": "people", "child": "children", "mouse": "mice",
    "goose": "geese", "tooth": "teeth", "foot": "feet", "ox": "oxen", "louse": "lice",
    "die": "dice", "cactus": "cacti", "fungus": "fungi", "knife": "knives", "wife": "wives",
    "life": "lives", "leaf": "leaves", "wolf": "wolves", "half": "halves", "shelf": "shelves",
    "loaf": "loaves", "calf": "calves", "thief": "thieves", "scarf": "scarves", "hoof": "hooves",
    "elf": "elves", "sheaf": "sheaves", "fireman": "firemen", "policeman": "policemen",
    "snowman": "snowmen", "businessman": "businessmen", "gentleman": "gentlemen",
}
_IRREGULAR_SINGULARS = {plural: singular for singular, plural in _IRREGULAR_PLURALS.items()}
# Nouns whose plural is the same word.
_UNCHANGED = {
    "sheep", "deer", "fish", "moose", "bison", "aircraft", "series", "species", "salmon", "trout",
    "shrimp", "squid", "cattle", "swine", "offspring", "hovercraft", "spacecraft", "equipment",
    "furniture", "luggage", "broccoli", "cauliflower", "lettuce", "rice", "bread", "cheese",
}
_VOWELS = set("aeiou")


def plural_forms(word: str) -> Set[str]:
    """Plausible plurals of a singular noun (lower case)."""
    if word in _UNCHANGED:
        return {word}
    if word in _IRREGULAR_PLURALS:
        return {_IRREGULAR_PLURALS[word], word + "s"}
    if len(word) > 1 and word.endswith("y") and word[-2] not in _VOWELS:
        return {word[:-1] + "ies"}
    if word.endswith(("s", "x", "z", "ch", "sh")):
        forms = {word + "es"}
        if word.endswith("s") and not word.endswith("ss"):
            forms.add(word + "ses")  # bus -> busses
        return forms
    if word.endswith("o"):
        return {word + "s", word + "es"}
    if word.endswith("fe"):
        return {word + "s", word[:-2] + "ves"}
    if word.endswith("f"):
        return {word + "s", word[:-1] + "ves"}
    return {word + "s"}


def singular_forms(word: str) -> Set[str]:
    """Plausible singulars of a word that may be a plural (vocabulary names such as "skis")."""
    if word in _UNCHANGED:
        return {word}
    if word in _IRREGULAR_SINGULARS:
        return {_IRREGULAR_SINGULARS[word]}
    if len(word) <= 3 or not word.endswith("s") or word.endswith(("ss", "us")):
        return set()
    forms = {word[:-1]}  # horses -> horse, ties -> tie
    if word.endswith("ies"):
        forms.add(word[:-3] + "y")
    if word.endswith("ves"):
        forms.update({word[:-3] + "f", word[:-3] + "fe"})
    if word.endswith("es") and word[:-2].endswith(("s", "x", "z", "ch", "sh")):
        forms.add(word[:-2])  # boxes -> box, buses -> bus
    return forms


def inflections(word: str) -> Set[str]:
    """The word with its plausible singular and plural forms."""
    forms = {word} | plural_forms(word)
    for singular in singular_forms(word):
        forms.add(singular)
        forms |= plural_forms(singular)
    return forms
