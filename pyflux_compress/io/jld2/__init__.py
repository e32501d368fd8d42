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
the byte offset and what was expected. ``save(path, **values)`` is the low-level writer (see _writer.py).
"""
from __future__ import annotations

import os

from ._hdf5 import JLD2FormatError
from ._types import MISSING, Ghost, JuliaStruct, JuliaType, NamedTuple

__all__ = ["load", "loads", "save", "JLD2FormatError", "NamedTuple", "JuliaStruct", "Ghost", "JuliaType", "MISSING"]


def load(path: str | os.PathLike, name: str | None = None):
    """Read a JLD2 file. Returns a dict {top-level name: value}, or the value of ``name`` if given.

    Raises FileNotFoundError for a missing file, KeyError for an unknown ``name`` and JLD2FormatError
    (prefixed with the file path) for anything malformed.
    """
    from ._reader import open_file

    if name is not None and not isinstance(name, str):
        raise ValueError(f"name must be a str such as 'model_state' or 'group/x'; got {name!r}")
    path = os.fspath(path)
    reader, mm = open_file(path)
    try:
        try:
            if name is not None:
                return reader.load_name(name)
            return {k: reader.load_object(a) for k, a in reader.root_names().items()}
        except JLD2FormatError as err:
            raise JLD2FormatError(f"{path}: {err}") from None
        except RecursionError:
            raise JLD2FormatError(f"{path}: structure nested too deeply") from None
    finally:
        del reader
        try:
            mm.close()
        except BufferError:   # a view still exported (should not happen: small arrays are copied)
            pass


def loads(data: bytes, name: str | None = None):
    """Like :func:`load` for an in-memory file image (no memory-mapping)."""
    from ._reader import Reader

    try:
        reader = Reader(bytes(data))
        if name is not None:
            return reader.load_name(name)
        return {k: reader.load_object(a) for k, a in reader.root_names().items()}
    except RecursionError:
        raise JLD2FormatError("structure nested too deeply") from None


def save(path: str | os.PathLike, **values) -> None:
    """Write ``values`` (name -> value) to a new JLD2 file at ``path``, atomically. See :mod:`._writer`."""
    from ._writer import write_file

    write_file(os.fspath(path), values)
