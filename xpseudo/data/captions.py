"""COCO captions files: ``{"images": [...], "annotations": [{"image_id", "caption"}, ...]}``."""
from collections import defaultdict
from typing import Dict, List, Tuple

from xpseudo.utils.io import InputError, load_json, require_keys

from .image_files import image_file_name


def load_coco_captions(path: str) -> Tuple[List[dict], Dict[int, List[str]]]:
    """(images, {image_id: [captions]}); captions whose image is not listed are an error."""
    data = load_json(path, "captions file")
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise InputError(path, "expected a COCO captions object with an 'annotations' list")
    images = data.get("images", [])
    if not isinstance(images, list):
        raise InputError(path, f"'images' must be a list, got {type(images).__name__}")
    for i, image in enumerate(images):
        require_keys(path, image, ("id",), f"images[{i}]")
        if not isinstance(image["id"], int) or isinstance(image["id"], bool):
            raise InputError(path, f"images[{i}]: 'id' must be an integer, got {image['id']!r}")
        image["file_name"] = checked_file_name(path, image, i)
    known = set()
    for i, image in enumerate(images):
        if image["id"] in known:
            raise InputError(path, f"images[{i}]: image id {image['id']!r} is listed twice")
        known.add(image["id"])
    captions: Dict[int, List[str]] = defaultdict(list)
    for i, ann in enumerate(data["annotations"]):
        require_keys(path, ann, ("image_id", "caption"), f"annotations[{i}]")
        if not isinstance(ann["caption"], str):
            raise InputError(path, f"annotations[{i}]: 'caption' must be a string")
        if not isinstance(ann["image_id"], int) or isinstance(ann["image_id"], bool):
            raise InputError(path, f"annotations[{i}]: 'image_id' must be an integer, got {ann['image_id']!r}")
        if images and ann["image_id"] not in known:
            raise InputError(path, f"annotations[{i}]: image_id {ann['image_id']} is not in 'images'")
        captions[ann["image_id"]].append(ann["caption"])
    return images, dict(captions)


def checked_file_name(path: str, image: dict, index: int) -> str:
    """``images[index]``'s file name (``file_name``, or LVIS's ``coco_url``); an error naming the
    file and the entry when it has neither."""
    try:
        return image_file_name(image)
    except KeyError:
        raise InputError(path, f"images[{index}] (id {image.get('id')!r}) has neither 'file_name' nor 'coco_url'") from None
