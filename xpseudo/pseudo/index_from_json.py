"""Build the index of any COCO pseudo-label file (one not written by our merge) in one streaming pass.

Every entry is checked as the student needs it (``label_checks``); the first bad one is an
InputError naming the file and the entry (``images[3] (id 7)``, ``annotations[12] (id 40)``). COCO
does not fix the order of ``images``, ``annotations`` and ``categories``, so what relates entries to
each other (an annotation's image and category, the RLE size against the image's) is checked on
flat arrays after the pass.
"""
import logging
import os
import tempfile
import time
from typing import Optional

import numpy as np

from xpseudo.utils.io import InputError
from xpseudo.utils.json_stream import iter_json_object
from xpseudo.utils.json_values import is_integer

from .label_checks import annotation_problem, image_problem, size_mismatch
from .label_index import Column, IndexBuilder, check_image_files, index_path, source_fingerprint

logger = logging.getLogger(__name__)

_ANNOTATION_FIELDS = ("id", "image_id", "category_id", "start", "length", "height", "width")


def build_index_from_json(source: str, path: Optional[str] = None, image_root: Optional[str] = None) -> str:
    """Check ``source`` and write its index to ``path`` (default: beside it); with ``image_root``,
    every image file must exist there too. Returns the index path."""
    path = path or index_path(source)
    fingerprint = source_fingerprint(source)  # before reading: a file changed meanwhile is stale
    started = time.perf_counter()
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".index-build.") as tmp:
        builder = IndexBuilder(tmp, source)
        sizes = {"height": Column(tmp), "width": Column(tmp)}
        annotations = {name: Column(tmp) for name in _ANNOTATION_FIELDS}
        categories, seen = None, set()
        try:
            for item in iter_json_object(source, ("images", "annotations", "categories")):
                if item.key in ("images", "annotations", "categories"):
                    seen.add(item.key)
                    if item.index is None:
                        raise InputError(source, f"not a COCO instances file: {item.key!r} is not a list")
                if item.key == "images":
                    image = item.value
                    problem = image_problem(image)
                    if problem:
                        where = f"images[{item.index}]" + (f" (id {image['id']})" if isinstance(image, dict) and "id" in image else "")
                        raise InputError(source, f"{where}: {problem}")
                    builder.add_image(image["id"], item.start, item.length, image["file_name"])
                    sizes["height"].append(image["height"])
                    sizes["width"].append(image["width"])
                elif item.key == "annotations":
                    ann = item.value
                    problem, size, _ = annotation_problem(ann)
                    if problem:
                        raise InputError(source, f"annotations[{item.index}] (id {ann.get('id') if isinstance(ann, dict) else None}): {problem}")
                    for name, value in zip(_ANNOTATION_FIELDS, (ann["id"], ann["image_id"], ann["category_id"], item.start, item.length, *size)):
                        annotations[name].append(value)
                elif item.key == "categories":
                    categories = categories or []
                    if not isinstance(item.value, dict) or not is_integer(item.value.get("id")):
                        raise InputError(source, f"categories[{item.index}] must be an object with an integer 'id'")
                    categories.append(item.value["id"])
            for key in ("images", "annotations", "categories"):
                if key not in seen:
                    raise InputError(source, f"not a COCO instances file: no {key!r} list")
            columns = {name: column.numpy() for name, column in annotations.items()}
            grouped, offsets = _check_and_group(source, builder.image_ids(), {k: c.numpy() for k, c in sizes.items()}, columns, categories or [])
            if image_root is not None:
                check_image_files(source, image_root, builder.file_names(), builder.images["image_id"].memmap())
            builder.finish(path, {"source": fingerprint, "images_checked_under": image_root, "annotations_base": 0}, grouped, offsets)
        finally:
            builder.close()
            for column in [*sizes.values(), *annotations.values()]:
                column.close()
    logger.info(f"indexed {source} in {time.perf_counter() - started:.1f} s: {path}")
    return path


def _check_and_group(source: str, image_ids: np.ndarray, sizes: dict, annotations: dict, categories):
    """The relational checks; returns the annotation columns grouped by image (file order of the
    images, file order of the annotations within one) and their CSR offsets."""
    def fail(row: int, problem: str):
        raise InputError(source, f"annotations[{row}] (id {int(annotations['id'][row])}): {problem}")

    by_id = np.argsort(image_ids, kind="stable")
    repeated = image_ids[by_id][1:][np.diff(image_ids[by_id]) == 0]
    if len(repeated):
        raise InputError(source, f"image id {int(repeated[0])} appears more than once in 'images'")
    found = np.searchsorted(image_ids[by_id], annotations["image_id"]).clip(max=max(len(image_ids) - 1, 0))
    known = (image_ids[by_id][found] == annotations["image_id"]) if len(image_ids) else np.zeros(len(found), bool)
    if not known.all():
        row = int(np.argmin(known))
        fail(row, f"image_id {int(annotations['image_id'][row])} is not among the images")
    position = by_id[found]  # each annotation's image, as a position in 'images'
    in_categories = np.isin(annotations["category_id"], np.asarray(categories, dtype=np.int64))
    if not in_categories.all():
        row = int(np.argmin(in_categories))
        fail(row, f"category_id {int(annotations['category_id'][row])} is not among the categories")
    fits = (sizes["height"][position] == annotations["height"]) & (sizes["width"][position] == annotations["width"])
    if not fits.all():
        row = int(np.argmin(fits))
        k = int(position[row])
        fail(row, size_mismatch((int(annotations["height"][row]), int(annotations["width"][row])), {"height": int(sizes["height"][k]), "width": int(sizes["width"][k])}))
    ids = np.sort(annotations["id"])
    repeated = ids[1:][np.diff(ids) == 0]
    if len(repeated):
        raise InputError(source, f"annotation id {int(repeated[0])} appears more than once in 'annotations'")
    group = np.argsort(position, kind="stable")
    offsets = np.concatenate([[0], np.cumsum(np.bincount(position, minlength=len(image_ids)))]).astype(np.int64)
    grouped = {
        "annotation_start": annotations["start"][group],
        "annotation_length": annotations["length"][group],
        "annotation_category": annotations["category_id"][group],
    }
    return grouped, offsets

