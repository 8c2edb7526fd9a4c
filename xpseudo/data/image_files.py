"""Checking that image files exist and decode, and their size as detectron2 will see it."""
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Optional, Sequence, Tuple

from PIL import Image, ImageOps


class UnreadableImage(Exception):
    """The file exists but does not decode (truncated, corrupt, not an image)."""


def decoded_size(path: str) -> Tuple[int, int]:
    """(height, width) of the image after its EXIF orientation is applied, which is what
    detectron2's ``read_image`` returns and checks against the dataset's height/width. The whole
    image is decoded, so a truncated file is caught here rather than in the middle of training."""
    try:
        with Image.open(path) as image:
            image.load()
            image = ImageOps.exif_transpose(image)
            return image.height, image.width
    except FileNotFoundError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise UnreadableImage(f"{path}: {e}") from e


# EXIF orientations that swap width and height (90 / 270 degree rotations, with or without flips)
_TRANSPOSED = {5, 6, 7, 8}


def header_size(path: str) -> Tuple[int, int]:
    """(height, width) as detectron2 will see it, from the file header only (no pixel decoding):
    fast enough for the millions of images of Open Images."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            if image.getexif().get(0x0112) in _TRANSPOSED:
                width, height = height, width
            return height, width
    except FileNotFoundError:
        raise
    except (OSError, ValueError, SyntaxError) as e:
        raise UnreadableImage(f"{path}: {e}") from e


def first_missing_file(paths: Sequence[str], threads: int = 32, chunk: int = 4096) -> Optional[int]:
    """The position of the first path that is not a file (None: all are). Checked from several
    threads: on a network file system each check waits for the server, not for this CPU."""
    def first_in(start: int) -> Optional[int]:
        for i in range(start, min(start + chunk, len(paths))):
            if not os.path.isfile(paths[i]):
                return i
        return None

    with ThreadPoolExecutor(max_workers=threads) as pool:
        found = [i for i in pool.map(first_in, range(0, len(paths), chunk)) if i is not None]
    return min(found) if found else None


# extensions detectron2's read_image (PIL) decodes that image folders commonly hold
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def list_images(folder: str) -> list:
    """Paths of the image files under ``folder`` (recursively), relative to it, sorted: the same
    order, and so the same image ids, on every machine and in every process."""
    found = []
    for directory, subdirs, files in os.walk(folder):
        subdirs.sort()
        found += [os.path.relpath(os.path.join(directory, f), folder) for f in files if f.lower().endswith(IMAGE_EXTENSIONS)]
    return sorted(found)


def image_file_name(image: dict) -> str:
    """An image entry's file name: ``file_name``, else the last component of ``coco_url`` as LVIS
    files store it (the lvis package reads them this way). KeyError when it has neither."""
    if isinstance(image.get("file_name"), str) and image["file_name"]:
        return image["file_name"]
    url = image.get("coco_url")
    if isinstance(url, str) and url.rstrip("/"):
        return url.rstrip("/").rsplit("/", 1)[-1]
    raise KeyError("file_name")
