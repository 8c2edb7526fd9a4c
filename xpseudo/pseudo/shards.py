"""Pseudo-label shards: deterministic slices of a dataset, written resumably, merged into one file.

A shard file is JSON lines:
    {"header": {"provenance": {...}, "shard": {"index", "count", "start", "end"}}}
    {"annotation": {...}}  ... the annotations of one image, then that image's line:
    {"image": {"id", "file_name", "height", "width"}, "status": ..., "annotations": n, "empty_masks": m[, "skipped_labels": k]}
    ...
    {"footer": {"counts": {...}, "started": t, "finished": t}}
While being written it is ``<name>.partial``; every image's block is flushed whole, so after a kill
the rerun keeps the complete blocks, drops a torn tail, and continues with the next image. The
footer is written and the file renamed to its final name only when the slice is done.
"""
import json
import logging
import os
import re
import shutil
import tempfile
import time
from typing import Dict, Iterator, List, Optional, Tuple

from xpseudo.utils.io import ExclusiveLock, InputError, atomic_write, atomic_write_json, sweep_stale_temporaries

from .label_checks import annotation_problem, image_problem, size_mismatch
from .label_index import IndexBuilder, check_image_files, index_path, source_fingerprint

logger = logging.getLogger(__name__)

STATUSES = ("labeled", "unlabeled", "no_match", "unreadable")
# labeled: at least one pseudo annotation; unlabeled: words matched but no pair survived the
# thresholds or every mask was empty; no_match: no caption names a wanted class; unreadable: the
# image file could not be read or decoded (logged).
_SHARD_NAME = re.compile(r"^shard-(\d{5})-of-(\d{5})\.jsonl$")


def shard_bounds(num_items: int, num_shards: int, index: int) -> Tuple[int, int]:
    """[start, end) of shard ``index``: contiguous slices in dataset order, sizes differing by at
    most one, so concatenating shards 0..N-1 gives the dataset order back."""
    if num_shards < 1:
        raise ValueError(f"the number of shards must be >= 1, got {num_shards}")
    if not 0 <= index < num_shards:
        raise ValueError(f"shard index {index} is outside 0..{num_shards - 1}")
    if num_shards > num_items:
        raise ValueError(f"{num_shards} shards for {num_items} images: every shard needs at least one image")
    size, extra = divmod(num_items, num_shards)
    start = index * size + min(index, extra)
    return start, start + size + (1 if index < extra else 0)


def shard_path(output_dir: str, index: int, count: int) -> str:
    return os.path.join(output_dir, "shards", f"shard-{index:05d}-of-{count:05d}.jsonl")


def _dumps(obj) -> str:
    return json.dumps(obj, separators=(",", ":"))


class ShardWriter:
    """Writes one shard; resumes its ``.partial`` file when the header matches."""

    def __init__(self, path: str, header: dict):
        self.path, self.partial, self.header = path, path + ".partial", header
        self.done: Dict[int, dict] = {}  # image id -> its image line, for images already written
        os.makedirs(os.path.dirname(path), exist_ok=True)
        # two runs on one output would interleave their lines: the second is refused
        self._lock = ExclusiveLock(path + ".lock", self.partial)
        keep = self._recover() if os.path.exists(self.partial) else 0
        self._file = open(self.partial, "r+b" if keep else "wb")
        if keep:
            self._file.truncate(keep)
            self._file.seek(keep)
            logger.info(f"{self.partial}: resuming after {len(self.done)} images")
        else:
            self._write([{"header": header}])
        self.started = time.time()

    def _recover(self) -> int:
        """Read a previous partial file; return the byte offset after its last complete image block
        (0: start over)."""
        offset, keep = 0, 0
        done = {}
        with open(self.partial, "rb") as f:
            for number, raw in enumerate(f):
                offset += len(raw)
                if not raw.endswith(b"\n"):
                    break  # torn last line
                try:
                    line = json.loads(raw)
                except json.JSONDecodeError:
                    break
                if number == 0:
                    if line.get("header") != self.header:
                        logger.warning(f"{self.partial}: written with other settings; starting the shard over")
                        return 0
                    keep = offset
                elif "image" in line:
                    done[line["image"]["id"]] = line
                    keep = offset
        self.done = done
        return keep

    def _write(self, lines: List[dict]) -> None:
        self._file.write("".join(_dumps(x) + "\n" for x in lines).encode())
        self._file.flush()

    def add(self, image: dict, status: str, annotations: List[dict], empty_masks: int = 0, skipped_labels: int = 0) -> None:
        """Write one image's block: its annotations, then its image line. ``skipped_labels``: weak
        labels of the image that named no region (a clicked point inside no proposal)."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        line = {"image": image, "status": status, "annotations": len(annotations), "empty_masks": empty_masks}
        if skipped_labels:
            line["skipped_labels"] = skipped_labels
        self._write([{"annotation": a} for a in annotations] + [line])
        self.done[image["id"]] = line

    def finish(self) -> dict:
        """Write the footer and give the shard its final name; returns its counts."""
        counts = count_images(self.done.values())
        self._write([{"footer": {"counts": counts, "started": self.started, "finished": time.time()}}])
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.partial, self.path)
        self._lock.release(remove=True)
        return counts

    def close(self) -> None:
        """Stop without finishing (the partial file stays for a resume)."""
        if not self._file.closed:
            self._file.close()
        self._lock.release()


def count_images(image_lines) -> dict:
    counts = {"images": 0, **{s: 0 for s in STATUSES}, "annotations": 0, "empty_masks": 0, "skipped_labels": 0}
    for line in image_lines:
        counts["images"] += 1
        counts[line["status"]] += 1
        counts["annotations"] += line["annotations"]
        counts["empty_masks"] += line["empty_masks"]
        counts["skipped_labels"] += line.get("skipped_labels", 0)
    return counts


def iter_shard(path: str) -> Iterator[dict]:
    """The lines of a finished shard file, parsed; a malformed line is an error naming the file."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                yield json.loads(raw)
            except json.JSONDecodeError as e:
                raise InputError(path, f"line {number} is not JSON ({e.msg}); delete the shard and rerun it") from e


def _read_header_and_footer(path: str) -> Tuple[dict, Optional[dict]]:
    """A shard's first and last lines, without reading what is between (the merge checks every
    shard before it reads any in full). The footer is None when the last line is not one."""
    with open(path, "rb") as f:
        first = f.readline()
        f.seek(0, os.SEEK_END)
        size = f.tell()
        tail, block = b"", 1 << 16
        while size > 0 and tail.count(b"\n") < 2:  # the last complete line and the newline before it
            step = min(block, size)
            size -= step
            f.seek(size)
            tail = f.read(step) + tail
    try:
        header = json.loads(first).get("header")
    except json.JSONDecodeError as e:
        raise InputError(path, f"line 1 is not JSON ({e.msg}); delete the shard and rerun it") from e
    if header is None:
        raise InputError(path, "first line is not a shard header")
    last = tail.rstrip(b"\n").rsplit(b"\n", 1)[-1]
    try:
        footer = json.loads(last).get("footer")
    except json.JSONDecodeError:
        footer = None
    return header, footer


def _write_merged(f, paths: List[str], categories: List[dict], index: IndexBuilder, tmp: str, keep: Tuple[str, ...] = ("labeled",),
                  description: str = "xpseudo pseudo labels", provenance_name: str = "provenance.json", allow_empty: bool = False) -> int:
    """Write the merged COCO file to ``f`` in one pass over each shard, adding every image whose
    status is in ``keep`` with the byte spans of its entries to ``index``. Images go straight to the
    output and annotations (which COCO lists after all images) to a spill file appended at the end.
    Returns the byte offset where the annotations start."""
    category_ids = {c["id"] for c in categories}
    head = '{"info":' + _dumps({"description": description, "provenance": provenance_name})
    head += ',"categories":' + _dumps(categories) + ',"images":['
    f.write(head)
    position = len(head)  # bytes written: the JSON is ASCII (json.dumps escapes the rest)
    spilled, next_id, pending = 0, 1, []
    with tempfile.TemporaryFile("w+", dir=tmp, prefix=".annotations.") as spill:
        for path in paths:
            for number, line in enumerate(iter_shard(path), 1):
                if "annotation" in line:
                    ann = {"id": next_id, **line["annotation"]}
                    problem, size, _ = annotation_problem(ann, allow_empty)
                    if problem is None and ann["category_id"] not in category_ids:
                        problem = f"category_id {ann['category_id']} is not among the categories"
                    if problem:
                        raise InputError(path, f"line {number}: {problem}; delete the shard and rerun it")
                    text = ("" if next_id == 1 else ",") + _dumps(ann)
                    spill.write(text)
                    skip = 0 if next_id == 1 else 1
                    pending.append((number, ann, size, (spilled + skip, len(text) - skip, ann["category_id"])))
                    spilled += len(text)
                    next_id += 1
                elif "image" in line:
                    image = line["image"]
                    labeled = line.get("status") in keep
                    problem = image_problem(image) if labeled else (f"{len(pending)} annotations before an image with status {line.get('status')!r}" if pending else None)
                    for ann_number, ann, size, _ in pending if problem is None else ():
                        if ann["image_id"] != image["id"]:
                            problem = f"annotation of image {ann['image_id']} before the line of image {image['id']} (line {number})"
                        problem = problem or size_mismatch(size, image)
                        if problem:
                            number = ann_number
                            break
                    if problem:
                        raise InputError(path, f"line {number}: {problem}; delete the shard and rerun it")
                    if labeled:
                        text = ("" if position == len(head) else ",") + _dumps(image)
                        skip = 0 if position == len(head) else 1
                        f.write(text)
                        index.add_image(image["id"], position + skip, len(text) - skip, image["file_name"], [span for *_, span in pending])
                        position += len(text)
                    pending = []
        middle = '],"annotations":['
        f.write(middle)
        spill.seek(0)
        shutil.copyfileobj(spill, f, 1 << 20)
        f.write("]}\n")
    return position + len(middle)


def find_shards(output_dir: str) -> Dict[int, List[str]]:
    """Shard count -> finished shard files in DIR/shards."""
    found: Dict[int, List[str]] = {}
    directory = os.path.join(output_dir, "shards")
    for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
        match = _SHARD_NAME.match(name)
        if match:
            found.setdefault(int(match.group(2)), []).append(os.path.join(directory, name))
    return found


def merge_shards(output_dir: str, num_shards: Optional[int] = None, image_root: Optional[str] = None, output: Optional[str] = None,
                 provenance_file: Optional[str] = None, keep: Tuple[str, ...] = ("labeled",), description: str = "xpseudo pseudo labels",
                 allow_empty_masks: bool = False) -> dict:
    """Check the N shards in DIR/shards and write DIR/pseudo_labels.json (COCO instances with the
    labeled images, all categories, numbered annotations), its index DIR/pseudo_labels.index (see
    ``label_index``) and DIR/provenance.json. Every entry is checked as the student needs it, and
    with ``image_root`` every labeled image must exist there. Returns the provenance written.
    ``output``, ``provenance_file`` and ``keep`` (the image statuses written) serve other writers of
    shards (tools/predict.py keeps images with no detection too, and with --keep-empty-masks
    detections whose mask is empty: ``allow_empty_masks``)."""
    found = find_shards(output_dir)
    if num_shards is None:
        if len(found) != 1:
            what = f"shards of {len(found)} different counts {sorted(found)}" if found else "no finished shard"
            raise InputError(os.path.join(output_dir, "shards"), f"{what}; pass the number of shards to merge")
        num_shards = next(iter(found))
    paths = [shard_path(output_dir, i, num_shards) for i in range(num_shards)]
    missing = [i for i, p in enumerate(paths) if not os.path.exists(p)]
    if missing:
        partial = [i for i in missing if os.path.exists(paths[i] + ".partial")]
        raise InputError(
            os.path.join(output_dir, "shards"),
            f"missing shards {missing} of {num_shards}" + (f" (interrupted, rerun them: {partial})" if partial else "")
            + "; nothing was merged",
        )
    headers, footers = [], []
    for path in paths:
        header, footer = _read_header_and_footer(path)
        if footer is None:
            raise InputError(path, "has no footer: the shard is incomplete; delete it and rerun it")
        headers.append(header)
        footers.append(footer)
    reference = headers[0]["provenance"]
    end = 0
    for index, (path, header) in enumerate(zip(paths, headers)):
        differ = sorted(k for k in set(reference) | set(header["provenance"]) if reference.get(k) != header["provenance"].get(k))
        if differ:
            raise InputError(path, f"foreign shard: its {differ} differ from those of {paths[0]}; nothing was merged")
        shard = header["shard"]
        if (shard["index"], shard["count"], shard["start"]) != (index, num_shards, end):
            raise InputError(path, f"shard header {shard} does not continue the slices before it (expected index {index} starting at {end})")
        end = shard["end"]
    if end != reference["num_images"]:
        raise InputError(paths[-1], f"shards cover {end} images, the dataset has {reference['num_images']}")

    output = output or os.path.join(output_dir, "pseudo_labels.json")
    provenance_file = provenance_file or os.path.join(output_dir, "provenance.json")
    lock = ExclusiveLock(os.path.join(output_dir, ".merging.lock"), output)
    try:
        # a merge killed earlier left its spill folder and half-written file: this merge holds the
        # lock every merge takes, so whatever is there is stale
        swept = sweep_stale_temporaries(output_dir, [".merge.*", f".{os.path.basename(output)}.*.tmp"])
        if swept:
            logger.info(f"{output_dir}: removed {swept} temporary files of an interrupted merge")
        return _merge_locked(output_dir, paths, headers, footers, reference, output, provenance_file, image_root, keep, description,
                             allow_empty_masks)
    finally:
        lock.release(remove=True)


def _merge_locked(output_dir, paths, headers, footers, reference, output, provenance_file, image_root, keep, description,
                  allow_empty_masks) -> dict:
    with tempfile.TemporaryDirectory(dir=output_dir, prefix=".merge.") as tmp:
        index = IndexBuilder(tmp, output)
        try:
            with atomic_write(output) as f:
                annotations_base = _write_merged(f, paths, reference["categories"], index, tmp, tuple(keep), description,
                                                 os.path.basename(provenance_file), allow_empty_masks)
                # every check before the rename: a failed merge leaves an earlier result in place
                index.check_unique_ids()
                if image_root is not None:
                    check_image_files(output, image_root, index.file_names(), index.images["image_id"].memmap())
            index.finish(index_path(output), {"source": source_fingerprint(output), "images_checked_under": image_root,
                                              "annotations_base": annotations_base})
        finally:
            index.close()
    totals = count_images([])
    for footer in footers:
        for key, value in footer["counts"].items():
            totals[key] = totals.get(key, 0) + value
    provenance = {
        **reference,
        "counts": totals,
        "shards": [{"index": h["shard"]["index"], "start": h["shard"]["start"], "end": h["shard"]["end"], **ft} for h, ft in zip(headers, footers)],
        "merged": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "output": os.path.basename(output),
    }
    atomic_write_json(provenance_file, provenance, indent=2)
    return provenance
