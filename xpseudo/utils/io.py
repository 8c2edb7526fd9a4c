"""Reading user files with errors that name the file and field, and writing files atomically."""
import contextlib
import errno
import fcntl
import glob
import json
import os
import shutil
import tempfile
from typing import Any, Iterator

from iopath.common.file_io import g_pathmgr


class InputError(ValueError):
    """Bad user input. The message names the file and the offending item."""

    def __init__(self, path: str, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


def load_json(path: str, what: str = "JSON file") -> Any:
    """Load a JSON file; a missing file or malformed JSON raises InputError naming the file."""
    if not g_pathmgr.exists(path):
        raise InputError(path, f"{what} does not exist")
    try:
        with g_pathmgr.open(path, "r") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise InputError(path, f"malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from e
    except UnicodeDecodeError as e:
        raise InputError(path, f"not UTF-8 text ({e.reason})") from e


def require_keys(path: str, record: dict, keys, where: str) -> None:
    """Raise InputError if ``record`` (found at ``where`` in ``path``) lacks any of ``keys``."""
    if not isinstance(record, dict):
        raise InputError(path, f"{where} must be an object, got {type(record).__name__}")
    missing = [k for k in keys if k not in record]
    if missing:
        raise InputError(path, f"{where} lacks field(s) {', '.join(repr(k) for k in missing)}")


def make_folder(path: str) -> None:
    """``os.makedirs(path, exist_ok=True)``; a file in the way is an OSError naming that file,
    not a bare "File exists"."""
    try:
        os.makedirs(path, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = os.path.abspath(path)
        while not os.path.exists(blocker):
            blocker = os.path.dirname(blocker)
        why = "is a file, not a folder" if blocker == os.path.abspath(path) else f"is a file, so the folder {path} cannot be made"
        raise NotADirectoryError(errno.ENOTDIR, why, blocker) from None


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "w") -> Iterator:
    """Open a temporary file beside ``path``; rename it onto ``path`` only if the block succeeds.

    Readers never see a half-written file and an existing ``path`` survives a failure or a kill.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    make_folder(directory)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        # mkstemp makes the file private (0600); give it the permissions open() would have
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_json(path: str, obj: Any, **dump_kwargs) -> None:
    with atomic_write(path) as f:
        json.dump(obj, f, **dump_kwargs)


class ExclusiveLock:
    """An exclusive ``flock`` on ``path`` (created if missing), held until ``release()``; the kernel
    drops it when the process dies, so a killed run never leaves a stale lock. A second holder is
    refused at once with an InputError naming ``what`` (the file being written)."""

    def __init__(self, path: str, what: str):
        self.path = path
        self._fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o666)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise InputError(what, "another process is writing it right now (its lock is held); wait for it, or use another output") from None

    def release(self, remove: bool = False) -> None:
        if self._fd is not None:
            if remove:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def sweep_stale_temporaries(directory: str, names) -> int:
    """Remove what killed writers left in ``directory``: files and folders matching the glob
    patterns ``names``. Call it only while holding the lock that every such writer holds."""
    removed = 0
    for pattern in names:
        for path in glob.glob(os.path.join(directory, pattern)):
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            removed += 1
    return removed
