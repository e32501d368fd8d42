"""The layer registry and the one walk: lookup by MRO, errors generated from the registry, modules/map_layers."""
from __future__ import annotations

import numpy as np
import pytest

import pyflux_compress as pfc
from pyflux_compress.model import registry


class MyDense(pfc.Dense):
    """A subclass of a registered layer: inherits every declaration (not registered itself)."""


def test_builtin_layers_are_registered_by_flux_name():
    for name in ("Chain", "Dense", "Conv", "CrossCor", "MaxPool", "MeanPool", "GlobalMeanPool", "flatten",
                 "Flatten", "BatchNorm", "Dropout"):
        assert registry.by_name(name) is not None, name
    assert registry.by_name("Flux.Dense") is pfc.Dense
    assert registry.lookup(MyDense(3, 2)) is pfc.Dense and registry.lookup(pfc.relu).flux_name == "activation"
    assert registry.by_onnx_op("Gemm") == [pfc.Dense] and registry.by_onnx_op("AveragePool") == [pfc.MeanPool]


def test_errors_list_what_is_supported():
    with pytest.raises(pfc.FluxSyntaxError) as err:
        pfc.parse("Chain(Dense(2 => 3), Foo(3))")
    assert all(n in str(err.value) for n in ("Dense", "Conv", "BatchNorm", "MaxPool"))
    with pytest.raises(ValueError, match="needs a class attribute flux_name"):
        registry.register_layer(type("Nameless", (), {}))


def test_subclass_of_registered_layer_works_everywhere(tmp_path):
    model = pfc.Chain(MyDense(4, 3, pfc.relu, seed=0), pfc.Dense(3, 2, seed=1))
    assert list(pfc.prune(model, 0.5).records[-1]["per_layer"]) == ["layers[1]", "layers[2]"]
    pfc.save(tmp_path / "m.jld2", model)                       # written as a Flux Dense
    back = pfc.load(tmp_path / "m.jld2")
    X = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    np.testing.assert_allclose(back(X), model(X), rtol=1e-6)
    ort = pytest.importorskip("onnxruntime")
    path = pfc.export_onnx(model, tmp_path / "m.onnx")
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": X})[0]
    np.testing.assert_allclose(out, model(X), rtol=1e-5, atol=1e-6)


def test_modules_paths_and_root_name():
    d = pfc.Dense(2, 3)
    assert list(pfc.modules(d)) == [("model", d)]
    m = pfc.Chain(pfc.Dense(2, 3), pfc.Chain(pfc.relu, pfc.Dense(3, 1)))
    assert [p for p, _ in pfc.modules(m, containers=True)] == ["model", "layers[1]", "layers[2]",
                                                                "layers[2].layers[1]", "layers[2].layers[2]"]
    assert [p for p, _ in pfc.modules(m)] == ["layers[1]", "layers[2].layers[1]", "layers[2].layers[2]"]


def test_map_layers_returns_a_new_model_and_keeps_records():
    m = pfc.Chain(pfc.Dense(2, 3, seed=0), pfc.Chain(pfc.relu, pfc.Dense(3, 1, seed=1)))
    m.records.append({"method": "x", "settings": {}, "per_layer": {}})
    seen = []
    out = pfc.map_layers(lambda p, l: seen.append(p) or l.copy(), m)
    assert seen == ["layers[1]", "layers[2].layers[1]", "layers[2].layers[2]"]
    assert str(out) == str(m) and out is not m and out[0] is not m[0] and out[1][0] is pfc.relu
    assert out.records == m.records and out.records is not m.records
    q = pfc.map_layers(lambda p, l: l, m, as_type=pfc.QuantizedChain)
    assert type(q) is pfc.QuantizedChain and type(q[1]) is pfc.Chain
