"""What tools/predict.py labels: a folder, a glob, a list file or a registered dataset, as records."""
import glob
import os
from collections import Counter
from typing import List, NamedTuple, Optional

from xpseudo.data.image_files import IMAGE_EXTENSIONS, list_images
from xpseudo.utils.io import InputError


class PredictInput(NamedTuple):
    records: List[dict]  # file_name (absolute or as the dataset has it), image_id, height/width where known
    image_root: str  # the output's file names are relative to it
    dataset: Optional[str]  # the registered dataset, when the input is one


def resolve_input(spec: str, registered=()) -> PredictInput:
    """``spec``: a registered dataset name (``registered`` lists them), a folder (every image under
    it, recursively), a .txt file listing one image path per line (relative ones against the list's
    folder), an image file, or a glob pattern. Folder, list and glob images get ids 1, 2, ... in
    sorted path order (list files: their order)."""
    if spec in registered:
        from detectron2.data import DatasetCatalog, MetadataCatalog

        records = [{k: r[k] for k in ("file_name", "image_id", "height", "width") if k in r} for r in DatasetCatalog.get(spec)]
        return PredictInput(records, MetadataCatalog.get(spec).get("image_root") or _common_root(records), spec)
    path = os.path.expanduser(spec)
    if os.path.isdir(path):
        names = list_images(path)
        if not names:
            raise InputError(path, f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
        return _numbered([os.path.join(path, n) for n in names], os.path.abspath(path))
    if os.path.isfile(path) and path.lower().endswith(".txt"):
        folder = os.path.dirname(os.path.abspath(path))
        with open(path) as f:
            lines = [line.strip() for line in f]
        paths = [os.path.join(folder, os.path.expanduser(line)) for line in lines if line and not line.startswith("#")]
        if not paths:
            raise InputError(path, "the list names no image")
        return _numbered(paths)
    if os.path.isfile(path):
        return _numbered([path])
    matches = sorted(p for p in glob.glob(path, recursive=True) if os.path.isfile(p))
    if not matches:
        raise InputError(spec, "--input is no registered dataset, folder, list file, image or glob pattern that matches a file")
    return _numbered(matches)


def _numbered(paths: List[str], root: Optional[str] = None) -> PredictInput:
    paths = [os.path.abspath(p) for p in paths]
    duplicates = sorted(p for p, n in Counter(paths).items() if n > 1)
    if duplicates:
        raise InputError(duplicates[0], "listed more than once in --input")
    records = [{"file_name": p, "image_id": i + 1} for i, p in enumerate(paths)]
    return PredictInput(records, root or _common_root(records), None)


def _common_root(records: List[dict]) -> str:
    folders = [os.path.dirname(os.path.abspath(r["file_name"])) for r in records]
    return os.path.commonpath(folders) if folders else ""
