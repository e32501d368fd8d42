"""import_onnx of branched graphs: what our exporter writes for SkipConnection (+ and cat), Parallel (Sum / Concat,
named branches), nested and named Chains, LayerNorm and MultiHeadAttention comes back as the same model.

Fork/join: a tensor read by several nodes starts branches; where they meet (Add / Sum / Concat) they become a
SkipConnection (the join reads the fork tensor itself) or a Parallel; subgraphs of one layer are recognised by
that layer's ``from_onnx_region`` hook."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

import pyflux_compress as pfc  # noqa: E402
from pyflux_compress.io.onnx import export_onnx, import_onnx  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import autoencoder_fashion_mnist as AE  # noqa: E402
import mobilenet_fashion_mnist as MOBILE  # noqa: E402
import resnet_fashion_mnist as RESNET  # noqa: E402
import vit_fashion_mnist as VIT  # noqa: E402

CAT = ("Chain(Conv((3, 3), 1 => 4, relu; pad=1), SkipConnection(Conv((3, 3), 4 => 6, relu; pad=1), "
       "(xs...) -> cat(xs...; dims=3)), Conv((1, 1), 10 => 5, relu), GlobalMeanPool(), flatten, Dense(5 => 2))")
PARALLEL = ("Chain(Dense(784 => 8, relu), Parallel(+, Dense(8 => 4), Chain(Dense(8 => 6, relu), Dense(6 => 4))), "
            "relu, Parallel(vcat, Dense(4 => 4, relu), Dense(4 => 2, relu), identity), Dense(10 => 3))")
NESTED = ("Chain(Dense(784 => 16, relu), SkipConnection(Chain(Dense(16 => 16, relu), SkipConnection(Chain("
          "Dense(16 => 8, tanh), Dense(8 => 16)), +)), +), SkipConnection(Dense(16 => 4), vcat), LayerNorm(20, relu), "
          "Dense(20 => 3))")
MODELS = {"resnet": RESNET.ARCH, "mobilenet": MOBILE.ARCH, "cat": CAT, "parallel": PARALLEL, "nested": NESTED,
          "vit": VIT.architecture(32, 4, 2)}


def _randomise(model, rng):
    for _, layer in pfc.modules(model):
        for name in ("bias", "beta", "mu", "scale"):
            a = getattr(layer, name, None)
            if isinstance(a, np.ndarray):
                a[...] = rng.uniform(-0.3, 0.3, a.shape) + (1.0 if name == "scale" else 0.0)
        for name in ("gamma", "sigma2"):
            a = getattr(layer, name, None)
            if isinstance(a, np.ndarray):
                a[...] = rng.uniform(0.5, 1.5, a.shape)
    return model


def _data(name, rng):
    x = rng.random((6, 1, 28, 28), dtype=np.float32)
    if name in ("parallel", "nested"):
        return x.reshape(6, -1)
    return VIT.patches(x) if name == "vit" else x


@pytest.mark.parametrize("name", sorted(MODELS))
def test_export_import_round_trip(name, rng, tmp_path):
    m = _randomise(pfc.parse(MODELS[name], seed=0), rng)
    x = _data(name, rng)
    path = export_onnx(m, tmp_path / "m.onnx", input_shape=x.shape[1:])
    back = import_onnx(path)
    assert str(back) == str(m)
    want = m(x)
    np.testing.assert_allclose(back(x), want, rtol=0, atol=1e-5 * max(1.0, float(np.abs(want).max())))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x})[0]
    assert float(np.abs(got - back(x)).max()) <= 1e-5 * max(1.0, float(np.abs(want).max()))
    # the weights are the same arrays, in the same places (paths included)
    for (k, a), (k2, b) in zip(m.params().items(), back.params().items()):
        assert k == k2
        np.testing.assert_array_equal(a, b)


def test_named_chains_and_branches_come_back_positional(rng, tmp_path):
    """ONNX keeps no Julia field names: Chain(enc = ..., dec = ...) and Parallel(vcat; a = ..., b = ...) import
    as their positional forms, computing the same function."""
    m = _randomise(pfc.parse(AE.ARCH, seed=1), rng)
    x = _data("ae", rng)
    back = import_onnx(export_onnx(m, tmp_path / "ae.onnx"))
    assert str(back) == ("Chain(Conv((3, 3), 1 => 16, relu, pad=1, stride=2), Conv((3, 3), 16 => 8, relu, pad=1, "
                         "stride=2), ConvTranspose((4, 4), 8 => 16, relu, pad=1, stride=2), Upsample(:bilinear, "
                         "scale = 2), Conv((3, 3), 16 => 1, σ, pad=1))")
    np.testing.assert_allclose(back(x), m(x), rtol=0, atol=1e-6)
    p = pfc.parse("Chain(Dense(3 => 4), Parallel(vcat; a = Dense(4 => 2), b = Dense(4 => 3, relu)))", seed=2)
    back = import_onnx(export_onnx(p, tmp_path / "p.onnx"))
    assert str(back) == "Chain(Dense(3 => 4), Parallel(vcat, Dense(4 => 2), Dense(4 => 3, relu)))"


def test_attention_with_bias_and_unequal_dims(rng, tmp_path):
    m = pfc.parse("Chain(Dense(5 => 12), SkipConnection(Chain(MultiHeadAttention(12 => (8, 16) => 12; nheads=2, "
                  "bias=true), first), +), LayerNorm(12; affine=false), flatten, Dense(36 => 2))", seed=3)
    m = _randomise(m, rng)
    x = rng.standard_normal((4, 3, 5)).astype(np.float32)
    back = import_onnx(export_onnx(m, tmp_path / "a.onnx", input_shape=(3, 5)))
    assert str(back) == str(m)
    np.testing.assert_allclose(back(x), m(x), rtol=1e-5, atol=1e-5)


def test_a_subgraph_that_is_no_known_pattern_is_refused_by_name(tmp_path):
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 4])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, [None, 4])
    nodes = [helper.make_node("Exp", ["input"], ["e"]), helper.make_node("Neg", ["input"], ["n"]),
             helper.make_node("Mul", ["e", "n"], ["output"])]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y]), opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "odd.onnx")
    with pytest.raises(ValueError, match=r"subgraph \['Exp', 'Neg', 'Mul'\] after tensor 'input' is not a "
                                         r"supported pattern"):
        import_onnx(tmp_path / "odd.onnx")
