"""Datasets declared in YAML or JSON files (``XPM.DATASET_FILES``), so users register their own data
without writing Python. Every tool reads these files when it loads its config
(``xpseudo.config.load_config``), so the pipeline's stages and Slurm jobs all see the same datasets.

    datasets:
      - name: mine_train_base          # any name not registered otherwise
        kind: instances                # instances | captions | tags | boxes | points | scribbles | images
        image_root: images/train       # relative paths: against this file's folder
        json: annotations/instances_train_base.json
        split: split.json              # {"base": [names], "novel": [names]}
        vocabulary: vocabulary.json    # optional: categories with synonyms (names caption words)

Further optional fields: ``captions`` (instances: a COCO captions file attached to the same
images), ``restrict_to`` (instances: "base" or "novel", the constrained evaluation) and
``caption_vocabulary`` (captions: a larger vocabulary whose other names block matches, as COCO's
80 classes keep "hot dog" from counting as "dog"). Kind ``images`` is a plain image folder (or a
COCO file's ``images``) with no labels, for tools/predict.py; its ``split`` is optional.

Parsing and checking need no detectron2; ``register_dataset_files`` registers with it.
"""
import os
from typing import Dict, Iterable, List, Sequence

from xpseudo.utils.io import InputError, load_json

KINDS = ("instances", "captions", "tags", "boxes", "points", "scribbles", "images")
WEAK_KINDS = ("tags", "boxes", "points", "scribbles")
# field -> whether it is a path (resolved against the file's folder)
FIELDS = {
    "name": False, "kind": False, "image_root": True, "json": True, "split": True, "vocabulary": True,
    "captions": True, "restrict_to": False, "caption_vocabulary": True,
}
# fields each kind needs, and fields only some kinds accept
REQUIRED = {kind: ("name", "kind", "image_root", "split", "json") for kind in KINDS}
REQUIRED["images"] = ("name", "kind", "image_root")
ONLY_FOR = {"captions": ("instances",), "restrict_to": ("instances",), "caption_vocabulary": ("captions", "instances")}


def read_dataset_file(path: str) -> List[dict]:
    """The entries of one dataset file, checked, with absolute paths. An error names the file,
    the entry and the field."""
    data = _load(path)
    entries = data.get("datasets") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise InputError(path, "expected a top-level 'datasets' list with at least one entry")
    folder = os.path.dirname(os.path.abspath(path))
    names, checked = set(), []
    for i, entry in enumerate(entries):
        where = f"datasets[{i}]" + (f" ({entry['name']!r})" if isinstance(entry, dict) and isinstance(entry.get("name"), str) else "")
        if not isinstance(entry, dict):
            raise InputError(path, f"{where} must be a mapping of fields, got {type(entry).__name__}")
        unknown = sorted(set(entry) - set(FIELDS))
        if unknown:
            raise InputError(path, f"{where}: unknown field(s) {unknown}; known: {list(FIELDS)}")
        kind = entry.get("kind")
        if kind not in KINDS:
            raise InputError(path, f"{where}: 'kind' must be one of {list(KINDS)}, got {kind!r}")
        missing = [k for k in REQUIRED[kind] if not entry.get(k)]
        if missing:
            raise InputError(path, f"{where}: kind {kind!r} needs field(s) {missing}")
        for key, value in entry.items():
            if not isinstance(value, str):
                raise InputError(path, f"{where}: {key!r} must be a string, got {value!r}")
            if key in ONLY_FOR and kind not in ONLY_FOR[key]:
                raise InputError(path, f"{where}: {key!r} applies to kind(s) {list(ONLY_FOR[key])}, not {kind!r}")
        if entry.get("restrict_to") not in (None, "base", "novel"):
            raise InputError(path, f"{where}: 'restrict_to' must be 'base' or 'novel', got {entry['restrict_to']!r}")
        if entry["name"] in names:
            raise InputError(path, f"{where}: the name {entry['name']!r} is declared twice")
        names.add(entry["name"])
        resolved = {k: os.path.normpath(os.path.join(folder, os.path.expanduser(v))) if FIELDS[k] else v for k, v in entry.items()}
        for key in (k for k, is_path in FIELDS.items() if is_path and k in resolved):
            exists = os.path.isdir if key == "image_root" else os.path.isfile
            if not exists(resolved[key]):
                raise InputError(path, f"{where}: {key} {resolved[key]} does not exist")
        checked.append(resolved)
    return checked


def _load(path: str):
    if not os.path.isfile(path):
        raise InputError(path, "dataset file does not exist")
    if path.lower().endswith(".json"):
        return load_json(path, "dataset file")
    import yaml

    try:
        with open(path) as f:
            return yaml.safe_load(f)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        raise InputError(path, f"malformed YAML{where}: {getattr(e, 'problem', e)}") from None


def registration_arguments(entry: dict) -> dict:
    """``register_ovis_dataset``'s keyword arguments for a checked entry (not kind ``images``)."""
    kind = entry["kind"]
    arguments = dict(image_root=entry["image_root"], split_file=entry["split"], vocabulary_file=entry.get("vocabulary"))
    if kind == "captions":
        arguments.update(captions_json=entry["json"], caption_vocabulary_file=entry.get("caption_vocabulary"))
    else:
        arguments.update(instances_json=entry["json"], captions_json=entry.get("captions"), restrict_to=entry.get("restrict_to"),
                         caption_vocabulary_file=entry.get("caption_vocabulary"))
    if kind in WEAK_KINDS:
        arguments["weak_labels"] = kind
    return arguments


def absolute_dataset_file_opts(opts: Sequence[str]) -> List[str]:
    """KEY VALUE overrides with the paths of an ``XPM.DATASET_FILES`` value made absolute, so that
    a process started elsewhere (a pipeline stage, a Slurm job) reads the same files."""
    opts = list(opts)
    for i in range(len(opts) - 1):  # any position: a whole command line works too
        if opts[i] == "XPM.DATASET_FILES":
            opts[i + 1] = repr(tuple(os.path.abspath(p) for p in parse_file_list(opts[i + 1])))
    return opts


def parse_file_list(value) -> List[str]:
    """A config value naming files: a tuple/list, a Python literal of one, or one comma-separated string."""
    import ast

    if isinstance(value, (list, tuple)):
        return [str(v) for v in value if v]
    text = str(value).strip()
    if text.startswith(("(", "[")):
        return [str(v) for v in ast.literal_eval(text) if v]
    return [p.strip() for p in text.split(",") if p.strip()]


def register_dataset_files(paths: Iterable[str]) -> Dict[str, dict]:
    """Register every dataset of ``paths`` with detectron2; returns {name: entry}. Registering the
    same files again is harmless; a name registered otherwise is an error naming the file."""
    from .ovis_datasets import register_image_folder, register_ovis_dataset

    registered = {}
    for path in paths:
        for i, entry in enumerate(read_dataset_file(path)):
            try:
                if entry["kind"] == "images":
                    register_image_folder(entry["name"], entry["image_root"], images_json=entry.get("json"),
                                          vocabulary_file=entry.get("vocabulary"), split_file=entry.get("split"))
                else:
                    register_ovis_dataset(entry["name"], **registration_arguments(entry))
            except ValueError as e:  # InputError too: the inner file's message, under this entry
                raise InputError(path, f"datasets[{i}] ({entry['name']!r}): {e}") from None
            registered[entry["name"]] = entry
    return registered
