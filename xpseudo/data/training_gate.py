"""Checks between the training data and iteration 0: every annotated record's masks and boxes are
checked once before training starts (a mask of another size would otherwise crash the loader
mid-training), and an image that cannot be decoded is skipped with its name logged instead."""
import logging
from typing import Iterable, List, Sequence

from detectron2.data import MetadataCatalog

from xpseudo.utils.io import InputError
from xpseudo.utils.json_values import finite_numbers
from xpseudo.utils.rle import segmentation_problem

logger = logging.getLogger(__name__)


def check_annotated_records(records: Sequence[dict], dataset_names: Iterable[str]) -> None:
    """InputError naming the dataset files, the image and the annotation for the first mask or box
    the loader could not use."""
    source = ", ".join(str(MetadataCatalog.get(n).get("json_file", n)) for n in dataset_names)
    for record in records:
        height, width = record.get("height"), record.get("width")
        for index, annotation in enumerate(record.get("annotations", [])):
            where = f"image {record.get('file_name')} (id {record.get('image_id')}), annotation {index}"
            if not finite_numbers(annotation.get("bbox"), 4):
                raise InputError(source, f"{where}: bbox must be 4 finite numbers, got {annotation.get('bbox')!r}")
            if "segmentation" in annotation and height and width:
                problem = segmentation_problem(annotation["segmentation"], height, width)
                if problem:
                    raise InputError(source, f"{where}: {problem}")
    logger.info(f"checked the masks and boxes of {len(records)} training images")


class SkipUndecodableImages:
    """A dataset mapper that maps like ``mapper`` but returns None (detectron2's loader then
    samples another image) for an image file that cannot be read or decoded, logging its name
    once per process."""

    def __init__(self, mapper):
        self.mapper = mapper
        self.skipped: List[str] = []

    def __call__(self, record: dict):
        try:
            return self.mapper(record)
        except OSError as e:  # PIL's UnidentifiedImageError and truncated files are OSErrors
            name = record.get("file_name")
            if name not in self.skipped:
                self.skipped.append(name)
                logger.warning(f"skipped {name}: the image cannot be decoded ({e}); {len(self.skipped)} image(s) skipped so far")
            return None
