"""Flux's EmbeddingBag (Flux >= 0.13.15): every input form against Flux's definition (reduce the looked-up
vectors of each bag), gradients by finite differences, Flux.state / JLD2, ONNX export + import with parity."""
from __future__ import annotations

import numpy as np
import pytest

import pyflux_compress as pfc

RED = ["mean", "sum", "maximum"]


def table(vocab=9, dim=4, seed=0):
    return np.random.default_rng(seed).normal(size=(dim, vocab)).astype(np.float32)


@pytest.mark.parametrize("red", RED)
def test_forms_match_flux_definition(red):
    w = table()
    eb = pfc.EmbeddingBag(w.copy(), red)
    f = {"mean": np.mean, "sum": np.sum, "maximum": np.max}[red]
    ids = np.array([[1, 3, 3], [0, 8, 2]])
    want = np.stack([f(w[:, b], axis=1) for b in ids])             # Flux: reduction(weight[:, bag], dims=2)
    np.testing.assert_allclose(eb(ids), want, rtol=1e-6)
    np.testing.assert_allclose(eb(ids[0]), want[0], rtol=1e-6)                  # one bag
    np.testing.assert_allclose(eb(pfc.onehotbatch(ids, 9)), want, rtol=1e-6, atol=1e-6)   # one-hot bags
    ragged = [np.array([1, 3, 3]), np.array([5])]
    np.testing.assert_allclose(eb(ragged), np.stack([f(w[:, b], axis=1) for b in ragged]), rtol=1e-6)
    data = np.array([1, 3, 3, 5])
    np.testing.assert_allclose(eb(data, [0, 3]), eb(ragged), rtol=1e-6)         # Flux's m(data, at) with at .- 1
    assert eb(ids.reshape(2, 1, 3)).shape == (2, 1, 4)


def test_errors_and_syntax():
    eb = pfc.parse("Chain(EmbeddingBag(9 => 4, sum), Dense(4 => 2))", seed=0)
    assert str(eb) == "Chain(EmbeddingBag(9 => 4, sum), Dense(4 => 2))"
    assert repr(pfc.EmbeddingBag(9, 4)) == "EmbeddingBag(9 => 4)"
    with pytest.raises(ValueError, match="reduction must be one of"):
        pfc.EmbeddingBag(9, 4, "median")
    with pytest.raises(ValueError, match="token ids must be in 0..8"):
        eb[0](np.array([[9, 1]]))
    with pytest.raises(ValueError, match="offsets must be increasing"):
        eb[0](np.array([1, 2, 3]), [1, 2])
    with pytest.raises(ValueError, match="empty bag has no mean"):
        pfc.EmbeddingBag(9, 4)([np.array([], int)])
    with pytest.raises(ValueError, match="not just one"):
        eb[0](3)


@pytest.mark.parametrize("red", RED)
@pytest.mark.parametrize("form", ["ids", "onehot", "ragged"])
def test_gradient_check(red, form):
    eb = pfc.EmbeddingBag(table().astype(np.float64), red)
    ids = np.array([[1, 3, 4], [0, 8, 2]])
    x = {"ids": ids, "onehot": pfc.onehotbatch(ids, 9), "ragged": [np.array([1, 3, 4]), np.array([0, 2])]}[form]
    y, cache = eb.forward(x)
    dy = np.random.default_rng(1).normal(size=y.shape)
    _, grads = eb.backward(cache, dy)
    eps = 1e-6
    for idx in [(0, 1), (2, 3), (1, 4), (3, 0), (0, 8), (1, 5)]:
        old = eb.weight[idx]
        eb.weight[idx] = old + eps
        up = float((eb(x) * dy).sum())
        eb.weight[idx] = old - eps
        down = float((eb(x) * dy).sum())
        eb.weight[idx] = old
        np.testing.assert_allclose(grads["weight"][idx], (up - down) / (2 * eps), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("red", RED)
def test_jld2_onnx_fit(red, tmp_path):
    onnx = pytest.importorskip("onnxruntime")
    m = pfc.parse(f"Chain(EmbeddingBag(9 => 4{'' if red == 'mean' else ', ' + red}), Dense(4 => 3))", seed=1)
    ids = np.random.default_rng(0).integers(0, 9, (12, 5)).astype(np.float32)
    pfc.fit(m, ids, np.arange(12) % 3, epochs=2, progress=False)
    pfc.save(tmp_path / "m.jld2", m)
    back = pfc.load(tmp_path / "m.jld2")
    assert str(back) == str(m) and np.array_equal(back[0].weight, m[0].weight)
    for opset in (17, 18):
        p = pfc.export_onnx(m, tmp_path / f"m{opset}.onnx", input_shape=(5,), opset=opset)
        got = onnx.InferenceSession(p, providers=["CPUExecutionProvider"]).run(None, {"input": ids})[0]
        np.testing.assert_allclose(got, m(ids), rtol=1e-5, atol=1e-6)
        imp = pfc.import_onnx(p)
        assert str(imp) == str(m)
        np.testing.assert_array_equal(imp[0].weight, m[0].weight)


def test_from_flux_struct_reads_the_reduction_type_parameter():
    w = table()
    for text, red in (("Statistics.#mean", "mean"), ("Base.#sum", "sum"), ("typeof(Base.maximum)", "maximum")):
        eb = pfc.EmbeddingBag.from_flux({"weight": w, "#params": (text, "Matrix{Float32}")}, None)
        assert eb.reduction == red
    with pytest.raises(ValueError, match="reduction Base.#prod is not supported"):
        pfc.EmbeddingBag.from_flux({"weight": w, "#params": ("Base.#prod",)}, None)
