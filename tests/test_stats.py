"""pfc.sparsity and pfc.count_params: per layer and in total."""
from __future__ import annotations

import json

import numpy as np
import pytest

import pyflux_compress as pfc


def _mlp():
    return pfc.parse("Chain(Dense(6 => 4, relu), Chain(Dense(4 => 3, relu), Dense(3 => 2)))", seed=0)


def test_dense_model_has_no_zeros_and_counts_every_parameter():
    m = _mlp()
    assert pfc.sparsity(m) == {"total": 0.0, "per_layer": {"layers[1]": 0.0, "layers[2].layers[1]": 0.0,
                                                            "layers[2].layers[2]": 0.0}}
    counts = pfc.count_params(m, nonzero=False)
    assert counts["per_layer"] == {"layers[1]": 6 * 4 + 4, "layers[2].layers[1]": 4 * 3 + 3,
                                   "layers[2].layers[2]": 3 * 2 + 2}
    assert counts["total"] == 28 + 15 + 8
    json.dumps(counts)  # plain data for reports


def test_counts_follow_zeros():
    m = _mlp()
    for _, layer in m.walk():
        if layer.params():
            layer.bias[:] = 1.0       # Flux initialises biases to zero: make them count
    m[0].weight[:2, :] = 0.0          # 12 of the 24 weights
    m[0].bias[:] = 0.0
    s = pfc.sparsity(m)
    assert s["per_layer"]["layers[1]"] == pytest.approx(0.5)
    assert s["total"] == pytest.approx(12 / (24 + 12 + 6))
    nz = pfc.count_params(m)           # nonzero=True is the default
    assert nz["per_layer"]["layers[1]"] == 12
    assert nz["total"] == pfc.count_params(m, nonzero=False)["total"] - 12 - 4


def test_include_bias_and_types():
    m = _mlp()
    m[0].bias[:] = 1.0
    m[0].bias[:2] = 0.0
    s = pfc.sparsity(m, include=["layers[1].bias"])
    assert s == {"total": 0.5, "per_layer": {"layers[1].bias": 0.5}}


def test_batchnorm_and_parameter_free_layers():
    m = pfc.parse("Chain(Conv((3, 3), 1 => 2, relu), BatchNorm(2), MaxPool((2, 2)), flatten, Dense(2 => 1))",
                  seed=0)
    c = pfc.count_params(m, nonzero=False)
    assert c["per_layer"] == {"layers[1]": 3 * 3 * 1 * 2 + 2, "layers[2]": 4, "layers[5]": 3}
    assert set(pfc.sparsity(m)["per_layer"]) == {"layers[1]", "layers[5]"}


def test_bad_arguments():
    with pytest.raises(ValueError, match="model"):
        pfc.sparsity(np.zeros(3))
    with pytest.raises(ValueError, match="nonzero"):
        pfc.count_params(_mlp(), nonzero="yes")
    with pytest.raises(ValueError, match="include"):
        pfc.sparsity(_mlp(), include="layers[7]")
