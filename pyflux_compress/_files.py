"""The package's one way to write a file, and its one JSON-ready converter.

Every file the package writes (JLD2 checkpoints, ``.pfcz`` archives, ONNX models, reports, plots) goes through
:func:`atomic_write`, so a crash or ``kill -9`` at any moment leaves either the previous file or the complete
new one, never a torn file:

1. the bytes go to a temp file in the destination's folder, named ``.<name>.<pid>.<random>.pfc-tmp`` (same
   filesystem, so the rename is atomic);
2. the temp file is flushed and ``fsync``-ed, given the permissions of any file the user creates (``0o666``
   less the umask; ``mkstemp`` would leave ``0600``), and renamed over the destination with ``os.replace``;
3. the folder is ``fsync``-ed so the rename itself survives a power cut.

Temp files left behind by a killed writer (their pid no longer runs) are removed on the next write to the same
path. Errors name the user's path, never the temp file.
"""
from __future__ import annotations

import contextlib
import errno
import os
import secrets
import threading
from typing import IO, Any, Iterator

import numpy as np

__all__ = ["atomic_write", "write_atomic", "jsonable", "MissingFolderError", "TEMP_SUFFIX"]

TEMP_SUFFIX = ".pfc-tmp"
_UMASK_LOCK = threading.Lock()


class MissingFolderError(FileNotFoundError, ValueError):
    """The destination's folder does not exist. Both a ``FileNotFoundError`` and a ``ValueError`` (a bad
    ``path`` argument), so callers catching either see it."""


def _umask() -> int:
    # os.umask can only be read by setting it; the lock keeps two threads from seeing each other's 0
    with _UMASK_LOCK:
        mask = os.umask(0)
        os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _clean_stale(folder: str, name: str) -> None:
    """Remove temp files of ``name`` whose writer process is gone (left by a crash or ``kill -9``)."""
    prefix = f".{name}."
    try:
        entries = os.listdir(folder)
    except OSError:
        return
    for entry in entries:
        if not (entry.startswith(prefix) and entry.endswith(TEMP_SUFFIX)):
            continue
        middle = entry[len(prefix):-len(TEMP_SUFFIX)].split(".")
        if len(middle) != 2 or not middle[0].isdigit():
            continue
        if int(middle[0]) == os.getpid() or _pid_alive(int(middle[0])):
            continue  # a live writer (maybe another thread or process) still owns it
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(folder, entry))


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open folders; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, *, text: bool = False, encoding: str = "utf-8") -> Iterator[IO[Any]]:
    """Open a temp file for writing that replaces ``path`` atomically when the ``with`` block ends cleanly.

    Yields a binary file object (or a text one with ``text=True``). If the block raises, the temp file is
    removed and ``path`` is untouched. Raises :class:`MissingFolderError` when the folder is missing and
    ``PermissionError`` when it is not writable, both naming ``path``.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    name = os.path.basename(path)
    if not name:
        raise IsADirectoryError(errno.EISDIR, "expected a file path, got a folder", path)
    if not os.path.isdir(folder):
        raise MissingFolderError(errno.ENOENT, f"cannot write {path!r}: directory {folder!r} does not exist")
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, f"cannot write {path!r}: it is a folder", path)
    _clean_stale(folder, name)
    tmp = os.path.join(folder, f".{name}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as err:
        raise type(err)(err.errno, f"cannot write {path!r}: {err.strerror}", path) from None
    try:
        with os.fdopen(fd, "w" if text else "wb", **({"encoding": encoding} if text else {})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)


def write_atomic(path: str | os.PathLike, data: bytes | str) -> None:
    """Write ``data`` (bytes, or str as UTF-8) to ``path`` through :func:`atomic_write`."""
    with atomic_write(path) as fh:
        fh.write(data.encode("utf-8") if isinstance(data, str) else data)


def jsonable(obj: Any, *, max_array: int | None = None) -> Any:
    """``obj`` as plain JSON types: dicts (keys as str), lists, str, int, float, bool, None.

    NumPy scalars become Python scalars and arrays lists; with ``max_array`` an array of more elements is
    summarised as ``"array(shape)"`` (for human-facing reports). Anything else becomes ``str(obj)``.
    """
    if isinstance(obj, dict):
        return {str(k): jsonable(v, max_array=max_array) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v, max_array=max_array) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        if max_array is not None and obj.size > max_array:
            return f"array{obj.shape}"
        return obj.tolist()
    return str(obj)
