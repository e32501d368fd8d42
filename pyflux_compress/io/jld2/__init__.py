"""Pure-Python JLD2 (Julia's HDF5-based format): read any JLD2 file, write Flux.state checkpoints.

``load(path)`` -> dict of top-level names to Python values; ``load(path, name)`` -> one value (``"g/x"``
paths reach into groups). Julia values map to Python as follows:

=====================  ===================================================================
Julia                  Python
=====================  ===================================================================
Array{T,N} (bits T)    numpy array, ``a.shape == size(A)`` (F-ordered view; memory-mapped
                       copy-on-write when >= 1 MiB and contiguous)
Array of other T       numpy object array of the element values
NamedTuple             :class:`NamedTuple` (attribute and key access, field order kept)
Tuple / ()             tuple / ()
struct                 :class:`JuliaStruct` (``type_name``, ``fields``)
functions, singletons  :class:`Ghost` (``type_name``, e.g. ``"NNlib.#relu"``)
nothing / missing      None / :data:`MISSING`
Dict                   dict (list of pairs if keys are unhashable)
String, Symbol         str
Int64/Float64/Bool     int/float/bool; other numbers stay numpy scalars (np.float32 ...)
DataType values        :class:`JuliaType`
=====================  ===================================================================

Loading never executes code. Any malformed input raises :class:`JLD2FormatError` (a ValueError) naming
the file, the byte offset and what was expected. Loads are bounded by the file: element counts times
element sizes are checked against the bytes present before anything is allocated or looped over, nesting
is limited to 64 levels, zero-size (ghost) values cost O(1) each, and bytes produced beyond the file's own
(decompression, fill values) are capped by ``max_bytes`` / ``$PYFLUX_JLD2_MAX_BYTES`` (see :func:`load`).
Chunked datasets (deflate, shuffle, bzip2, LZ4, Zstd; B-tree v1/v2, fixed-array, implicit and single-chunk
indexes) and reference cycles between mutable structs are read. ``save(path, **values)`` is the low-level writer (see _writer.py).
"""
from __future__ import annotations

import os
import struct

from ._hdf5 import JLD2FormatError
from ._types import MISSING, Ghost, JuliaStruct, JuliaType, NamedTuple

__all__ = ["load", "loads", "save", "JLD2FormatError", "NamedTuple", "JuliaStruct", "Ghost", "JuliaType", "MISSING"]


def load(path: str | os.PathLike, name: str | None = None, *, mmap: bool = True, max_bytes: int | None = None):
    """Read a JLD2 file. Returns a dict {top-level name: value}, or the value of ``name`` if given.

    Args:
        mmap: large contiguous arrays (>= 1 MiB) are memory-mapped copy-on-write (lazy; the default) or,
            with ``mmap=False``, read into private memory (what ``pfc.load`` uses: nothing stays mapped).
        max_bytes: limit on the bytes the load may *produce* beyond those stored in the file (decompressed
            chunks, fill values of never-written datasets), checked before anything is decompressed or
            allocated. Default: ``$PYFLUX_JLD2_MAX_BYTES`` if set, else 16 MiB + 64x the file size
            (bounded by the file: a 1 MB deflate bomb declaring 1 GiB is refused before decompressing).
            Raise it for a trusted file that is compressed more than 64:1 (e.g. all-zero arrays).

    Raises FileNotFoundError for a missing file, KeyError for an unknown ``name`` and JLD2FormatError
    (prefixed with the file path) for anything malformed or over a limit, and nothing else.
    """
    from ._chunks import resolve_max_bytes
    from ._reader import open_file

    if name is not None and not isinstance(name, str):
        raise ValueError(f"name must be a str such as 'model_state' or 'group/x'; got {name!r}")
    max_bytes = resolve_max_bytes(max_bytes)
    path = os.fspath(path)
    reader, mm = _guarded(path, lambda: open_file(path, mmap=mmap, max_bytes=max_bytes))
    try:
        return _guarded(path, lambda: _read(reader, name))
    finally:
        reader = None          # drop the reader's views of the map before closing it
        try:
            mm.close()
        except BufferError:   # a view still exported (should not happen: small arrays are copied)
            pass


def loads(data: bytes, name: str | None = None, *, max_bytes: int | None = None):
    """Like :func:`load` for an in-memory file image (no memory-mapping). Errors name no file."""
    from ._chunks import resolve_max_bytes
    from ._reader import Reader

    max_bytes = resolve_max_bytes(max_bytes)
    data = bytes(data)
    return _guarded(None, lambda: _read(Reader(data, max_bytes=max_bytes), name))


def _read(reader, name: str | None):
    if name is not None:
        return reader.load_name(name)
    return {k: reader.load_object(a) for k, a in reader.root_names().items()}


def _guarded(path: str | None, work):
    """Run ``work``; let only JLD2FormatError (prefixed with ``path``), KeyError for an unknown name and
    OSError out. Other exceptions can only come from a malformed file reaching a check that is missing:
    they are reported as JLD2FormatError naming the exception ("while decoding"), never leaked."""
    from ._reader import NameNotFoundError

    prefix = f"{path}: " if path else ""
    try:
        return work()
    except JLD2FormatError as err:
        raise JLD2FormatError(f"{prefix}{err}") from None
    except (NameNotFoundError, OSError):
        raise
    except RecursionError:
        raise JLD2FormatError(f"{prefix}structure nested too deeply") from None
    except MemoryError:
        raise JLD2FormatError(f"{prefix}out of memory while decoding (the file declares more data than "
                              "fits; see max_bytes)") from None
    except (ValueError, IndexError, KeyError, TypeError, AttributeError, OverflowError, ZeroDivisionError,
            UnicodeError, struct.error) as err:
        raise JLD2FormatError(f"{prefix}malformed file: {type(err).__name__} while decoding ({err})") from None


def save(path: str | os.PathLike, **values) -> None:
    """Write ``values`` (name -> value) to a new JLD2 file at ``path``, atomically. See :mod:`._writer`."""
    from ._writer import write_file

    write_file(os.fspath(path), values)
