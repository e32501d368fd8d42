"""Models loaded from JLD2 hold weights in Julia's (Fortran) memory order; every compression function must give
exactly the result it gives on the same weights in C order. (A reshape(-1) on the write side once silently
wrote pruned values into a temporary copy.)"""
from __future__ import annotations

import numpy as np
import pytest

import pyflux_compress as pfc

OPS = {
    "prune-layer": lambda m: pfc.prune(m, 0.5, scope="layer"),
    "prune-global": lambda m: pfc.prune(m, 0.7, scope="global"),
    "sparsify": lambda m: pfc.sparsify(m, 0.5),
    "sparsify-2:4": lambda m: pfc.sparsify(m, pattern="2:4"),
    "prune_structured": lambda m: pfc.prune_structured(m, 0.5),
    "lowrank": lambda m: pfc.lowrank(m, rank=3),
    "quantize": lambda m: pfc.quantize(m, bits=8, granularity="per_channel").dequantize(),
    "share_weights": lambda m: pfc.share_weights(m, bits=3),
}


def _model(order: str) -> pfc.Chain:
    m = pfc.parse("Chain(Dense(24 => 16, relu), Dense(16 => 12, relu), Dense(12 => 4))", seed=3)
    for _, layer in m.walk():
        if hasattr(layer, "weight"):
            layer.weight = np.asarray(layer.weight, order=order)
    return m


@pytest.mark.parametrize("op", sorted(OPS))
def test_fortran_ordered_weights_give_the_c_order_result(op):
    c_model, f_model = _model("C"), _model("F")
    assert not f_model[0].weight.flags.c_contiguous
    f_before = [layer.weight.copy() for _, layer in f_model.walk() if hasattr(layer, "weight")]
    c_out, f_out = OPS[op](c_model), OPS[op](f_model)
    c_w = [layer.weight for _, layer in c_out.walk() if hasattr(layer, "weight")]
    f_w = [layer.weight for _, layer in f_out.walk() if hasattr(layer, "weight")]
    assert len(c_w) == len(f_w)
    for a, b in zip(c_w, f_w):
        np.testing.assert_array_equal(a, b)
    # and the input model is untouched
    for before, (_, layer) in zip(f_before, [w for w in f_model.walk() if hasattr(w[1], "weight")]):
        np.testing.assert_array_equal(before, layer.weight)


def test_prune_of_a_loaded_checkpoint(tmp_path):
    model = _model("C")
    pfc.save(tmp_path / "m.jld2", model)
    loaded = pfc.load(tmp_path / "m.jld2")
    pruned = pfc.prune(loaded, 0.5, scope="global")
    expected = pfc.prune(model, 0.5, scope="global")
    for (_, a), (_, b) in zip(pruned.walk(), expected.walk()):
        if hasattr(a, "weight"):
            np.testing.assert_array_equal(a.weight, b.weight)
            assert np.isclose((a.weight == 0).mean(), (b.weight == 0).mean())
