"""How the version-1 archive fixtures in this folder were written (run once, with the version-1 writer).

Kept for the record: after the format moved on, running it again writes the *current* version, so the
committed ``.pfcz`` files (not this script) are the compatibility fixtures. ``expected.npz`` holds every array
of each model (``<variant>/<path>.<field>``) and its output on ``X`` (``<variant>/output``), written with
``np.savez_compressed`` (no pickle). A quantized layer's shadow float weight is not stored by the archive,
so it is not listed.
"""
from __future__ import annotations

import os

import numpy as np

import pyflux_compress as pfc
from pyflux_compress.compression.archive import save_compressed

HERE = os.path.dirname(os.path.abspath(__file__))
MLP = "Chain(Dense(30 => 24, relu), Dense(24 => 12, tanh), Dense(12 => 5))"
CNN = "Chain(Conv((3, 3), 1 => 4, relu), BatchNorm(4), MaxPool((2, 2)), flatten, Dense(36 => 3))"


def arrays(model):
    """Every stored array of ``model`` by ``path.field`` (the same walk as tests/test_archive.py)."""
    out = {}
    for path, layer in model.walk():
        for name, value in vars(layer).items():
            if isinstance(value, np.ndarray):
                out[f"{path}.{name}"] = value
        fl = getattr(layer, "float_layer", None)
        if fl is not None and not hasattr(layer, "qweight"):  # shared: bias lives on the template
            out[f"{path}.bias"] = fl.bias
        for k, m in getattr(layer, "masks", {}).items():
            out[f"{path}.masks.{k}"] = np.asarray(m)
    return out


def variants():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(16, 30)).astype(np.float32)
    Xc = rng.random((6, 1, 8, 8)).astype(np.float32)
    mlp = pfc.parse(MLP, seed=5)
    cnn = pfc.parse(CNN, seed=1)
    pfc.fit(cnn, Xc, rng.integers(0, 3, 6), epochs=1, batchsize=3, progress=False)  # BatchNorm stats move
    return {
        "pruned": (pfc.prune(mlp, 0.7), X),
        "q8_affine_pruned": (pfc.quantize(pfc.prune(mlp, 0.8), 8, "affine", "per_channel", calibration=X), X),
        "q4_symmetric": (pfc.quantize(mlp, 4, "symmetric", "per_tensor"), X),
        "shared4_pruned": (pfc.share_weights(pfc.prune(mlp, 0.6), bits=4), X),
        "cnn_q8_pruned": (pfc.quantize(pfc.prune(cnn, 0.5), 8, granularity="per_channel", calibration=Xc), Xc),
    }


def main() -> None:
    expected = {}
    for name, (model, X) in variants().items():
        save_compressed(os.path.join(HERE, f"{name}.pfcz"), model)
        for key, value in arrays(model).items():
            expected[f"{name}/{key}"] = value
        expected[f"{name}/input"] = X
        expected[f"{name}/output"] = model(X)
    np.savez_compressed(os.path.join(HERE, "expected.npz"), **expected)


if __name__ == "__main__":
    main()
