"""COCO captions files: ``{"images": [...], "annotations": [{"image_id", "caption"}, ...]}``."""
from collections import defaultdict
from typing import Dict, List, Tuple

from xpseudo.utils.io import InputError, load_json, require_keys


def load_coco_captions(path: str) -> Tuple[List[dict], Dict[int, List[str]]]:
    """(images, {image_id: [captions]}); captions whose image is not listed are an error."""
    data = load_json(path, "captions file")
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise InputError(path, "expected a COCO captions object with an 'annotations' list")
    images = data.get("images", [])
    for i, image in enumerate(images):
        require_keys(path, image, ("id", "file_name"), f"images[{i}]")
    known = {image["id"] for image in images}
    captions: Dict[int, List[str]] = defaultdict(list)
    for i, ann in enumerate(data["annotations"]):
        require_keys(path, ann, ("image_id", "caption"), f"annotations[{i}]")
        if not isinstance(ann["caption"], str):
            raise InputError(path, f"annotations[{i}]: 'caption' must be a string")
        if images and ann["image_id"] not in known:
            raise InputError(path, f"annotations[{i}]: image_id {ann['image_id']} is not in 'images'")
        captions[ann["image_id"]].append(ann["caption"])
    return images, dict(captions)
