"""An index into a pseudo-label file: where each image's entries are, so training never parses it whole.

A COCO pseudo-label file for Conceptual Captions is gigabytes of JSON; parsing it costs every
training process ~28 GB and ten minutes. The index (``pseudo_labels.index`` beside
``pseudo_labels.json``) holds, per image, its id, file name, the byte range of its image entry and
of each of its annotations, and the annotations' category ids, as flat int64 arrays. Processes map
it read-only (one copy in the page cache per node, whatever the number of processes) and read an
image's entries from the JSON file only when the data loader asks for that image.

The merge writes it while writing the JSON; for any other file it is built by streaming the file
once (``xpseudo.pseudo.index_from_json``). Both check every entry first, so an index exists only
for a file the student can train on. It records the JSON file's size and modification time, and is
rebuilt when they differ.

File layout: one line of JSON (the header: format, version, source, counts, columns with their
offsets), then the columns, 8-byte aligned.
"""
import array
import json
import os
import tempfile
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

from xpseudo.utils.io import InputError, atomic_write

FORMAT, VERSION = "xpseudo pseudo-label index", 1
# image columns (one entry per image, in the order of the file), then the CSR offsets into the
# annotation columns and the file names, then the annotation columns (grouped by image)
IMAGE_COLUMNS = ("image_id", "image_start", "image_length")
ANNOTATION_COLUMNS = ("annotation_start", "annotation_length", "annotation_category")


def index_path(source: str) -> str:
    """Where the index of pseudo-label file ``source`` lives: beside it, ``<stem>.index``."""
    return os.path.splitext(source)[0] + ".index"


def source_fingerprint(source: str) -> dict:
    stat = os.stat(source)
    return {"file": os.path.basename(source), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


class Column:
    """An append-only int64 (or byte, typecode "B") column kept in a temporary file in chunks, so
    building an index for millions of images takes constant memory."""

    def __init__(self, directory: str, typecode: str = "q", chunk: int = 1 << 16):
        self.typecode, self.chunk = typecode, chunk
        self._buffer = array.array(typecode)
        self._file = tempfile.TemporaryFile(dir=directory, prefix=".index-column.")
        self._flushed = 0

    def append(self, value) -> None:
        self._buffer.append(value)
        if len(self._buffer) >= self.chunk:
            self._flush()

    def extend(self, values) -> None:
        self._buffer.extend(values)
        if len(self._buffer) >= self.chunk:
            self._flush()

    def _flush(self) -> None:
        self._buffer.tofile(self._file)
        self._flushed += len(self._buffer)
        del self._buffer[:]

    def __len__(self) -> int:
        return self._flushed + len(self._buffer)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8 if self.typecode == "B" else np.int64)

    def numpy(self) -> np.ndarray:
        self._flush()
        self._file.seek(0)
        return np.fromfile(self._file, dtype=self.dtype)

    def memmap(self) -> np.ndarray:
        """The column so far, mapped rather than read (constant memory)."""
        self._flush()
        if len(self) == 0:
            return np.zeros(0, dtype=self.dtype)
        return np.memmap(self._file, dtype=self.dtype, mode="r", shape=(len(self),))

    def copy_to(self, f) -> None:
        self._flush()
        self._file.seek(0)
        while True:
            block = self._file.read(1 << 20)
            if not block:
                return
            f.write(block)

    def close(self) -> None:
        self._file.close()


class IndexBuilder:
    """Collects the columns image by image (each with the spans of its annotations) and writes
    the index; the images may come in any id order (an ``order`` column then sorts them)."""

    def __init__(self, directory: str, source: str):
        self.source = source
        self.images = {name: Column(directory) for name in IMAGE_COLUMNS}
        self.annotation_offsets, self.name_offsets = Column(directory), Column(directory)
        self.annotation_offsets.append(0)
        self.name_offsets.append(0)
        self.names = Column(directory, "B")
        self.annotations = {name: Column(directory) for name in ANNOTATION_COLUMNS}
        self._last_id, self._ascending = None, True

    def add_image(self, image_id: int, start: int, length: int, file_name: str, annotations=()) -> None:
        """``annotations``: (start, length, category id) of each of the image's annotations."""
        for column, value in zip(self.images.values(), (image_id, start, length)):
            column.append(value)
        name = file_name.encode()
        self.names.extend(name)
        self.name_offsets.append(len(self.names))
        for a_start, a_length, category in annotations:
            self.annotations["annotation_start"].append(a_start)
            self.annotations["annotation_length"].append(a_length)
            self.annotations["annotation_category"].append(category)
        self.annotation_offsets.append(len(self.annotations["annotation_start"]))
        if self._last_id is not None and image_id <= self._last_id:
            self._ascending = False
        self._last_id = image_id

    def image_ids(self) -> np.ndarray:
        return self.images["image_id"].numpy()

    def file_names(self) -> "FileNames":
        return FileNames(self.names.memmap(), self.name_offsets.memmap())

    def check_unique_ids(self) -> Optional[np.ndarray]:
        """The order of the images by id (None: already ascending); an id listed twice is an error."""
        if self._ascending:
            return None
        ids = self.image_ids()
        order = np.argsort(ids, kind="stable")
        repeated = ids[order][1:][np.diff(ids[order]) == 0]
        if len(repeated):
            raise InputError(self.source, f"image id {int(repeated[0])} appears more than once in 'images'")
        return order

    def finish(self, path: str, header: dict, annotations: Optional[Dict[str, np.ndarray]] = None, annotation_offsets=None) -> None:
        """Write the index. ``annotations`` / ``annotation_offsets`` replace the collected ones
        (a reader that met the annotations apart from their images groups them itself)."""
        columns: Dict[str, Union[Column, np.ndarray]] = dict(self.images)
        columns["annotation_offsets"] = self.annotation_offsets if annotation_offsets is None else annotation_offsets
        columns["name_offsets"], columns["names"] = self.name_offsets, self.names
        columns.update(self.annotations if annotations is None else annotations)
        order = self.check_unique_ids()
        if order is not None:
            columns["order"] = order.astype(np.int64)
        write_index(path, {**header, "num_images": len(self.images["image_id"])}, columns)

    def close(self) -> None:
        for column in [*self.images.values(), *self.annotations.values(), self.annotation_offsets, self.name_offsets, self.names]:
            column.close()


class FileNames:
    """The file names of an index's images (in the file's order), decoded a block at a time."""

    def __init__(self, names: np.ndarray, offsets: np.ndarray):
        self.names, self.offsets = names, offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def block(self, start: int, end: int) -> List[str]:
        bounds = np.asarray(self.offsets[start:end + 1]).tolist()
        data = bytes(self.names[bounds[0]:bounds[-1]]) if bounds else b""
        return [data[a - bounds[0]:b - bounds[0]].decode() for a, b in zip(bounds[:-1], bounds[1:])]

    def blocks(self, size: int = 1 << 16):
        """(first position, names) in blocks of ``size``."""
        for start in range(0, len(self), size):
            yield start, self.block(start, min(start + size, len(self)))


def check_image_files(source: str, image_root: str, file_names: FileNames, image_ids, threads: int = 32) -> None:
    """Every image file (``file_names``, in the order of the file's 'images') exists under
    ``image_root``, else an InputError naming the first missing one. Block by block: constant
    memory for any number of images."""
    from xpseudo.data.image_files import first_missing_file

    for start, names in file_names.blocks():
        missing = first_missing_file([os.path.join(image_root, n) for n in names], threads)
        if missing is not None:
            path = os.path.join(image_root, names[missing])
            raise InputError(source, f"images[{start + missing}] (id {int(image_ids[start + missing])}): image file {path} does not exist")


def write_index(path: str, header: dict, columns: Dict[str, Union[Column, np.ndarray]]) -> None:
    """Write the header line and the columns (temporary-file columns are streamed) atomically."""
    layout, offset = {}, 0
    for name, column in columns.items():
        dtype = column.dtype
        layout[name] = {"dtype": dtype.str, "offset": offset, "length": len(column)}
        offset += -(-len(column) * dtype.itemsize // 8) * 8
    line = (json.dumps({**header, "format": FORMAT, "version": VERSION, "columns": layout}, separators=(",", ":")) + "\n").encode()
    data_start = -(-len(line) // 8) * 8
    with atomic_write(path, "wb") as f:
        f.write(line + b" " * (data_start - len(line)))
        for name, column in columns.items():
            if isinstance(column, Column):
                column.copy_to(f)
            else:
                f.write(np.ascontiguousarray(column, dtype=column.dtype).tobytes())
            size = len(column) * column.dtype.itemsize
            f.write(b"\0" * (-size % 8))


def read_header(path: str) -> Optional[dict]:
    """The index header, or None when ``path`` is not an index of this format and version."""
    try:
        with open(path, "rb") as f:
            header = json.loads(f.readline())
    except (OSError, ValueError):
        return None
    if not isinstance(header, dict) or header.get("format") != FORMAT or header.get("version") != VERSION:
        return None
    return header


def is_fresh(path: str, source: str) -> bool:
    """Whether ``path`` is an index of ``source`` as it is now."""
    header = read_header(path)
    return header is not None and header.get("source") == source_fingerprint(source)


class PseudoLabelIndex:
    """Read side: images in detectron2's order (ascending image id, as ``load_coco_json`` gives
    them); ``entries(i)`` reads image ``i``'s image and annotation objects from the JSON file.

    Safe to use from data-loader workers: the columns are read-only maps and the JSON file is
    read with ``os.pread`` on a descriptor opened per process."""

    def __init__(self, path: str, source: str):
        header = read_header(path)
        if header is None:
            raise InputError(path, f"not a {FORMAT} of version {VERSION}")
        self.path, self.source, self.header = path, source, header
        with open(path, "rb") as f:
            data_start = -(-len(f.readline()) // 8) * 8
        self.columns = {}
        for name, spec in header["columns"].items():
            if spec["length"] == 0:
                self.columns[name] = np.zeros(0, dtype=np.dtype(spec["dtype"]))
            else:
                self.columns[name] = np.memmap(path, dtype=np.dtype(spec["dtype"]), mode="r", offset=data_start + spec["offset"], shape=(spec["length"],))
        self.order = self.columns.get("order")  # dataset position -> position in the file, when they differ
        self.annotations_base = header.get("annotations_base", 0)
        self._fd, self._pid = None, None

    def __len__(self) -> int:
        return len(self.columns["image_id"])

    @property
    def images_checked_under(self) -> Optional[str]:
        """The image folder every file name was found in when the index was written (None: not checked)."""
        return self.header.get("images_checked_under")

    def position(self, i: int) -> int:
        """Image ``i`` (dataset order) -> its position among the file's images."""
        return int(self.order[i]) if self.order is not None else i

    def image_ids(self) -> np.ndarray:
        ids = self.columns["image_id"]
        return np.asarray(ids[self.order] if self.order is not None else ids)

    def file_name_at(self, position: int) -> str:
        offsets = self.columns["name_offsets"]
        return bytes(self.columns["names"][offsets[position]:offsets[position + 1]]).decode()

    def file_names(self) -> FileNames:
        """File names in the order of the file's 'images' (``dataset_positions`` maps them)."""
        return FileNames(self.columns["names"], self.columns["name_offsets"])

    def dataset_positions(self) -> np.ndarray:
        """Position in the file's 'images' -> position in dataset order."""
        if self.order is None:
            return np.arange(len(self))
        inverse = np.empty(len(self), dtype=np.int64)
        inverse[np.asarray(self.order)] = np.arange(len(self))
        return inverse

    def check_image_files(self, image_root: str) -> None:
        """Every image file exists under ``image_root`` (an InputError naming the first missing)."""
        check_image_files(self.source, image_root, self.file_names(), self.columns["image_id"])

    def annotation_ranges(self) -> Tuple[np.ndarray, np.ndarray]:
        """(first, end) annotation row of each image, dataset order."""
        offsets = np.asarray(self.columns["annotation_offsets"])
        first, end = offsets[:-1], offsets[1:]
        if self.order is not None:
            first, end = first[self.order], end[self.order]
        return first, end

    def categories(self) -> np.ndarray:
        """The category id of every annotation row."""
        return np.asarray(self.columns["annotation_category"])

    def _read(self, start: int, length: int) -> bytes:
        if self._pid != os.getpid():  # a forked worker gets its own descriptor
            self._fd, self._pid = os.open(self.source, os.O_RDONLY), os.getpid()
        data = os.pread(self._fd, length, start)
        if len(data) != length:
            raise InputError(self.source, f"shorter than its index {self.path} says; delete the index to rebuild it")
        return data

    def entries(self, i: int) -> Tuple[dict, List[dict]]:
        """Image ``i``'s image object and annotation objects, as they are in the JSON file."""
        k = self.position(i)
        image = json.loads(self._read(int(self.columns["image_start"][k]), int(self.columns["image_length"][k])))
        offsets = self.columns["annotation_offsets"]
        starts, lengths = self.columns["annotation_start"], self.columns["annotation_length"]
        annotations = [
            json.loads(self._read(self.annotations_base + int(starts[a]), int(lengths[a])))
            for a in range(int(offsets[k]), int(offsets[k + 1]))
        ]
        return image, annotations

    def __getstate__(self):  # pickled (spawned workers): reopen the maps on the other side
        return {"path": self.path, "source": self.source}

    def __setstate__(self, state):
        self.__init__(state["path"], state["source"])
