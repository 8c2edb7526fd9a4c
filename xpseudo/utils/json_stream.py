"""Reading a large JSON object (a COCO file) element by element, with each element's byte span.

``json.load`` of a 5 GB pseudo-label file needs ~28 GB of Python objects. COCO files are one object
whose big members are arrays; this walks them one element at a time, in constant memory, and gives
the byte range of every element so an index can point back into the file. The standard library's
decoder does the parsing: the bytes are viewed as latin-1 (one character per byte, so character
offsets are byte offsets) and only elements that hold non-ASCII text are decoded again as UTF-8.
"""
import json
from typing import Any, Iterator, NamedTuple, Optional

from .io import InputError

_WHITESPACE = " \t\n\r"
_decoder = json.JSONDecoder()


class JsonItem(NamedTuple):
    key: str  # the top-level member
    index: Optional[int]  # position in the member's array; None when the member is not an array
    value: Any
    start: int  # byte offset of the element in the file
    length: int  # its length in bytes


class _Buffer:
    """A window on the file as latin-1 text; ``base`` is the byte offset of ``text[0]``."""

    def __init__(self, f, path: str, chunk: int):
        self.f, self.path, self.chunk = f, path, chunk
        self.text, self.pos, self.base, self.eof = "", 0, 0, False

    def fill(self) -> bool:
        """Read more; False at the end of the file. Consumed text is dropped first."""
        if self.eof:
            return False
        data = self.f.read(max(self.chunk, len(self.text) - self.pos))  # grows for a huge element
        self.base += self.pos
        self.text = self.text[self.pos:] + data.decode("latin-1")
        self.pos = 0
        self.eof = not data
        return bool(data)

    def peek(self) -> str:
        """The next non-whitespace character ('' at the end of the file)."""
        while True:
            while self.pos < len(self.text) and self.text[self.pos] in _WHITESPACE:
                self.pos += 1
            if self.pos < len(self.text) or not self.fill():
                return self.text[self.pos:self.pos + 1]

    def expect(self, chars: str) -> str:
        found = self.peek()
        if not found or found not in chars:
            raise InputError(self.path, f"malformed JSON at byte {self.base + self.pos}: expected one of {chars!r}, found {found or 'the end of the file'!r}")
        self.pos += 1
        return found

    def value(self):
        """Decode the value at the current position: (value, byte start, byte length)."""
        self.peek()
        while True:
            try:
                value, end = _decoder.raw_decode(self.text, self.pos)
            except json.JSONDecodeError as e:
                if self.fill():
                    continue
                raise InputError(self.path, f"malformed JSON at byte {self.base + e.pos}: {e.msg}") from e
            if end == len(self.text) and self.fill():
                continue  # a number (or anything) ending at the window's edge may go on
            start, span = self.base + self.pos, self.text[self.pos:end]
            self.pos = end
            if not span.isascii():
                try:
                    value = json.loads(span.encode("latin-1").decode("utf-8"))
                except UnicodeDecodeError as e:
                    raise InputError(self.path, f"not UTF-8 text at byte {start + e.start}") from e
            return value, start, len(span)  # latin-1: one character per byte


def iter_json_object(path: str, array_keys=(), chunk: int = 1 << 20) -> Iterator[JsonItem]:
    """The members of the JSON object in ``path``, in file order. A member named in ``array_keys``
    whose value is an array is given one element at a time (``index`` 0, 1, ...); any other member
    as one item with ``index`` None. Malformed JSON is an InputError naming the file and byte."""
    with open(path, "rb") as f:
        buffer = _Buffer(f, path, chunk)
        buffer.expect("{")
        if buffer.peek() == "}":
            return
        while True:
            key, _, _ = buffer.value()
            if not isinstance(key, str):
                raise InputError(path, f"malformed JSON at byte {buffer.base + buffer.pos}: an object key must be a string")
            buffer.expect(":")
            if key in array_keys and buffer.peek() == "[":
                buffer.expect("[")
                index = 0
                if buffer.peek() == "]":
                    buffer.pos += 1
                else:
                    while True:
                        value, start, length = buffer.value()
                        yield JsonItem(key, index, value, start, length)
                        index += 1
                        if buffer.expect(",]") == "]":
                            break
            else:
                value, start, length = buffer.value()
                yield JsonItem(key, None, value, start, length)
            if buffer.expect(",}") == "}":
                break
        if buffer.peek():
            raise InputError(path, f"malformed JSON at byte {buffer.base + buffer.pos}: data after the top-level object")
