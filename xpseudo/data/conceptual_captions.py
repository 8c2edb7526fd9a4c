"""Conceptual Captions: the released TSV (one ``caption<TAB>url`` line per image, no header) plus
the images a user downloaded, turned into a COCO captions file of the images that exist and decode.

Downloaded images are found by a file-name pattern over the TSV row: ``{index}`` (0-based row),
``{shard}`` (index // shard size), ``{url_sha1}``, ``{url_md5}``. ``NAMINGS`` holds the usual ones.
"""
import hashlib
import logging
import os
from typing import Dict, List, Optional, Tuple

from tqdm import tqdm

from xpseudo.utils.io import InputError
from xpseudo.utils.parallel import ordered_map

from .image_files import UnreadableImage, decoded_size

logger = logging.getLogger(__name__)

NAMINGS = {
    "img2dataset": "{shard:05d}/{index:09d}.jpg",  # img2dataset's default output, 10000 rows a shard
    "index": "{index}.jpg",
    "url-sha1": "{url_sha1}.jpg",
}


def read_tsv(path: str) -> Tuple[List[Tuple[int, str, str]], int]:
    """([(row index, caption, url)], number of rows with an empty caption, which are left out).
    A ``caption<TAB>url`` header line is allowed. A line that is not ``caption<TAB>url`` is an error naming the file and line."""
    rows, empty, header = [], 0, 0
    try:
        with open(path, encoding="utf-8") as f:
            for line_number, line in enumerate(f, 1):
                fields = line.rstrip("\r\n").split("\t")
                if len(fields) != 2:
                    raise InputError(path, f"line {line_number}: expected 'caption<TAB>url', found {len(fields)} tab-separated fields")
                if line_number == 1 and fields == ["caption", "url"]:
                    header = 1  # img2dataset's instructions add this header; rows still count from 0
                    continue
                index = line_number - 1 - header
                caption, url = fields[0].strip(), fields[1].strip()
                if not caption:
                    empty += 1
                    continue
                rows.append((index, caption, url))
    except FileNotFoundError:
        raise InputError(path, "Conceptual Captions TSV does not exist") from None
    except UnicodeDecodeError as e:
        raise InputError(path, f"not UTF-8 text ({e.reason})") from e
    return rows, empty


def image_file_name(pattern: str, index: int, url: str, shard_size: int = 10000) -> str:
    """The downloaded file of TSV row ``index``, relative to the image folder."""
    fields = dict(
        index=index, shard=index // shard_size,
        url_sha1=hashlib.sha1(url.encode()).hexdigest(), url_md5=hashlib.md5(url.encode()).hexdigest(),
    )
    try:
        return pattern.format(**fields)
    except (KeyError, IndexError, ValueError) as e:
        raise ValueError(f"file-name pattern {pattern!r} is not valid ({e}); it may use {sorted(fields)}") from e


def _check(path: str) -> Tuple[str, Optional[Tuple[int, int]], str]:
    """(status "ok" / "missing" / "corrupt", decoded size, problem)."""
    try:
        return "ok", decoded_size(path), ""
    except FileNotFoundError:
        return "missing", None, ""
    except UnreadableImage as e:
        return "corrupt", None, str(e)


def convert_conceptual_captions(
    tsv: str, image_dir: str, pattern: str = NAMINGS["img2dataset"], shard_size: int = 10000, workers: int = 0,
) -> Tuple[dict, Dict[str, int]]:
    """(COCO captions dict, counts). Image ids are TSV row index + 1; every image is decoded once
    to drop corrupt files and to record its size as detectron2 reads it."""
    rows, empty = read_tsv(tsv)
    names = [image_file_name(pattern, index, url, shard_size) for index, _, url in rows]
    checked = ordered_map(_check, [os.path.join(image_dir, name) for name in names], workers, chunksize=64)
    images, annotations = [], []
    counts = {"rows": len(rows) + empty, "empty_caption": empty, "missing": 0, "corrupt": 0}
    for (index, caption, url), name, (status, size, problem) in zip(
        rows, names, tqdm(checked, total=len(rows), desc="checking images", unit="img")
    ):
        if status != "ok":
            counts[status] += 1
            if status == "corrupt":
                logger.warning(f"corrupt image left out: {problem}")
            continue
        images.append({"id": index + 1, "file_name": name, "height": size[0], "width": size[1], "url": url})
        annotations.append({"id": index + 1, "image_id": index + 1, "caption": caption})
    counts["images"] = len(images)
    info = {"description": "Conceptual Captions images that exist and decode", "tsv": os.path.abspath(tsv),
            "file_name_pattern": pattern, "counts": counts}
    return {"info": info, "images": images, "annotations": annotations}, counts
