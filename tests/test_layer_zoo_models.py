"""Models built from issue 12's layers: syntax round trip, JLD2 both ways, ONNX parity/import, gradients of
whole models, compression across SkipConnection, the corpus autoencoder."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import pyflux_compress as pfc
from pyflux_compress.io import jld2

from _corpus import CORPUS

ARCHS = [
    "Chain(Conv((3, 3), 1 => 8, relu; pad=1), SkipConnection(Chain(Conv((3, 3), 8 => 8, relu; pad=1), BatchNorm(8), "
    "Conv((3, 3), 8 => 8; pad=1)), +), GlobalMaxPool(), flatten, Dense(8 => 10))",
    "Chain(Conv((3, 3), 1 => 4, relu; pad=1), SkipConnection(Conv((3, 3), 4 => 4; pad=1), (mx, x) -> cat(mx, x, dims=3)),"
    " MaxPool((2, 2)), flatten, Dense(392 => 10))",
    "Chain(Conv((3, 3), 1 => 8; pad=1, stride=2), DepthwiseConv((3, 3), 8 => 8, relu6; pad=1), Conv((1, 1), 8 => 16, "
    "hardswish), GlobalMeanPool(), flatten, Dense(16 => 10))",
    "Chain(Conv((3, 3), 1 => 8, relu; pad=1, stride=2), ConvTranspose((4, 4), 8 => 4, relu; pad=1, stride=2), "
    "Upsample(:bilinear, scale = 2), ConvTranspose((3, 3), 4 => 1, σ; pad=SamePad()))",
    "Chain(Conv((3, 3), 1 => 8; pad=1), Parallel(+, Conv((1, 1), 8 => 8), Conv((3, 3), 8 => 8; pad=1, groups=2)), "
    "AdaptiveMaxPool((4, 4)), flatten, LayerNorm(128), Dense(128 => 10, x -> leakyrelu(x, 0.2)))",
    "Chain(Conv((3, 3), 1 => 16; pad=1), PixelShuffle(2), Upsample(:nearest, scale = 2), AdaptiveMeanPool((7, 7)), "
    "flatten, Dense(196 => 10, mish))",
    "Chain(Dense(4 => 6, selu), Parallel(vcat; a = Dense(6 => 3), b = Dense(6 => 2)), Scale(5, tanh), Dense(5 => 2))",
    "Chain(enc = Chain(Conv((3, 3), 1 => 4, relu; pad=1, stride=2), Conv((3, 3), 4 => 8; pad=1, stride=2)), "
    "dec = Chain(ConvTranspose((4, 4), 8 => 4, relu; pad=1, stride=2), ConvTranspose((4, 4), 4 => 1, σ; pad=1, "
    "stride=2)))",
    "Chain(Conv((3, 3), 1 => 8; pad=1), GroupNorm(8, 2, relu), Conv((3, 3), 8 => 4; pad=1), InstanceNorm(4, swish; "
    "affine=true), AlphaDropout(0.1), GlobalMeanPool(), flatten, Dense(4 => 2))",
]


def _input(model, rng, n=3):
    return (rng.random((n, 1, 14, 14), dtype=np.float32) if "Conv" in str(model)
            else rng.random((n, 4), dtype=np.float32))


@pytest.mark.parametrize("arch", ARCHS)
def test_syntax_jld2_onnx(arch, rng, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from pyflux_compress.io.onnx import to_onnx_model

    m = pfc.parse(arch, seed=1)
    assert str(pfc.parse(str(m))) == str(m)                     # print/parse round trip
    x = _input(m, rng)
    y = m(x)
    pfc.save(tmp_path / "m.jld2", m)
    m2 = pfc.load(tmp_path / "m.jld2")
    assert str(m2) == str(m)
    for (k, a), (k2, b) in zip(m.params().items(), m2.params().items()):
        assert k == k2 and a.dtype == b.dtype and np.array_equal(a, b)   # bit-exact weights
    np.testing.assert_allclose(m2(x), y, rtol=1e-5, atol=1e-6)
    fresh = pfc.parse(arch, seed=7)
    pfc.load_state(fresh, tmp_path / "m.jld2")                  # Flux.loadmodel! into the user's own model
    np.testing.assert_allclose(fresh(x), y, rtol=1e-5, atol=1e-6)
    sess = ort.InferenceSession(to_onnx_model(m).SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(["output"], {"input": x})[0]
    assert np.abs(got - y).max() <= 1e-5 * max(1.0, np.abs(y).max())


def test_whole_model_gradients_through_skip_convtranspose_upsample(rng):
    from test_layer_zoo import fd_check

    m = pfc.parse("Chain(Conv((3, 3), 2 => 4, tanh; pad=1), SkipConnection(Chain(DepthwiseConv((3, 3), 4 => 4, elu; "
                  "pad=1), Conv((1, 1), 4 => 4)), +), ConvTranspose((2, 2), 4 => 3; stride=2), "
                  "Upsample(:bilinear, scale = (1, 2)), LayerNorm(8, 16, 3))", seed=3)
    fd_check(m, rng.standard_normal((2, 2, 4, 4)), rng, n_probe=6)


def test_onnx_import_of_new_standard_ops(rng, tmp_path):
    pytest.importorskip("onnxruntime")
    from pyflux_compress.io.onnx import export_onnx, import_onnx

    m = pfc.parse("Chain(Conv((3, 3), 1 => 8, relu; pad=1), ConvTranspose((2, 2), 8 => 4, selu; stride=2), "
                  "Conv((3, 3), 4 => 4, x -> leakyrelu(x, 0.2); pad=1, groups=2), Upsample(:nearest, scale = 2), "
                  "GlobalMaxPool(), PixelShuffle(1))", seed=2)
    export_onnx(m, tmp_path / "m.onnx")
    back = import_onnx(tmp_path / "m.onnx")
    assert str(back) == str(m)
    x = _input(m, rng)
    np.testing.assert_allclose(back(x), m(x), rtol=1e-6, atol=1e-6)


def test_structured_pruning_keeps_residual_channels_coupled(rng):
    m = pfc.parse("Chain(Conv((3, 3), 1 => 8, relu; pad=1), SkipConnection(Chain(Conv((3, 3), 8 => 8, relu; pad=1), "
                  "BatchNorm(8), Conv((3, 3), 8 => 8; pad=1)), +), DepthwiseConv((3, 3), 8 => 8; pad=1), "
                  "ConvTranspose((2, 2), 8 => 6; stride=2), Conv((3, 3), 6 => 4; pad=1), GlobalMeanPool(), flatten, "
                  "Dense(4 => 3))", seed=4)
    for layer in m.layers[1].layers.layers:
        if hasattr(layer, "mu"):
            layer.mu[...] = rng.standard_normal(8)
    p = pfc.prune_structured(m, 0.5)
    inner = p.layers[1].layers
    # the residual stream (stem + the block's last conv, added by +) shrinks as one group, on both sides
    assert str(inner) == "Chain(Conv((3, 3), 4 => 4, relu, pad=1), BatchNorm(4), Conv((3, 3), 4 => 4, pad=1))"
    assert str(p.layers[0]) == "Conv((3, 3), 1 => 4, relu, pad=1)"
    assert str(p.layers[2]) == "Conv((3, 3), 4 => 4, pad=1, groups=4)"                   # depthwise follows
    assert str(p.layers[3]) == "ConvTranspose((2, 2), 4 => 3, stride=2)"                  # ConvTranspose pruned
    kept = p.records[-1]["kept"]
    stream = np.array(kept["layers[1]"])
    assert kept["layers[2].layers.layers[3]"] == stream.tolist() and "layers[3]" not in kept
    x = _input(m, rng)
    # zeroing the removed channels in the original gives the pruned model exactly
    ref = m.copy()
    drop = np.setdiff1d(np.arange(8), stream)
    for conv in (ref.layers[0], ref.layers[1].layers.layers[2]):
        conv.weight[..., drop], conv.bias[drop] = 0, 0
    ref.layers[2].bias[drop] = 0
    conv1 = ref.layers[1].layers.layers[0]
    dropi = np.setdiff1d(np.arange(8), kept["layers[2].layers.layers[1]"])
    conv1.weight[..., dropi], conv1.bias[dropi] = 0, 0
    ref.layers[1].layers.layers[1].beta[dropi] = 0
    ref.layers[1].layers.layers[1].gamma[dropi] = 0
    keep3 = np.array(kept["layers[4]"])
    ct = ref.layers[3]
    ct.weight[:, :, np.setdiff1d(np.arange(6), keep3), :] = 0
    ct.bias[np.setdiff1d(np.arange(6), keep3)] = 0
    keep5 = np.array(kept["layers[5]"])    # Conv(6 => 4) -> GlobalMeanPool -> flatten -> Dense
    assert str(p.layers[4]) == "Conv((3, 3), 3 => 2, pad=1)"
    ref.layers[4].weight[..., np.setdiff1d(np.arange(4), keep5)] = 0
    ref.layers[4].bias[np.setdiff1d(np.arange(4), keep5)] = 0
    np.testing.assert_allclose(p(x), ref(x), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not CORPUS.is_dir(), reason="JLD2 corpus not available")
def test_corpus_autoencoder_loads_as_runnable_convtranspose_model(rng, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from pyflux_compress.io.onnx import to_onnx_model

    path = CORPUS / "MatteoFriedrich__Vector-quantized-VAE__models__autoencoder7x7x16.jld2"
    ae = pfc.load(path)
    enc, dec = ae.layers
    assert str(dec).startswith("Chain(ConvTranspose((3, 3), 16 => 32, pad=1), BatchNorm(32), relu, "
                               "ConvTranspose((4, 4), 32 => 16, pad=1, stride=2)")
    raw = jld2.load(path, "autoencoder")
    np.testing.assert_array_equal(dec.layers[3].weight, raw.layers[1].layers[3].weight)
    x = rng.random((2, 1, 28, 28), dtype=np.float32)
    z = enc(x)
    y = ae(x)
    assert z.shape == (2, 16, 7, 7) and y.shape == (2, 1, 28, 28) and (0 <= y).all() and (y <= 1).all()
    sess = ort.InferenceSession(to_onnx_model(ae).SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(["output"], {"input": x})[0], y, rtol=1e-5, atol=1e-5)
    pfc.save(tmp_path / "ae.jld2", ae)
    back = pfc.load(tmp_path / "ae.jld2")
    assert all(np.array_equal(a, b) for a, b in zip(ae.params().values(), back.params().values()))
    # arch= with the user's own syntax rebuilds the struct file too
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = pfc.load(path, arch=str(ae))
    np.testing.assert_allclose(again(x), y, rtol=1e-6)


@pytest.mark.parametrize("fmt", ["dynamic", "qdq"])
def test_quantized_export_of_residual_depthwise_and_transposed_convs(fmt, rng, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    m = pfc.parse("Chain(Conv((3, 3), 1 => 8, relu; pad=1), SkipConnection(Chain(DepthwiseConv((3, 3), 8 => 8, relu; "
                  "pad=1), Conv((1, 1), 8 => 8)), +), ConvTranspose((2, 2), 8 => 4, relu; stride=2), GlobalMeanPool(), "
                  "flatten, Dense(4 => 3))", seed=1)
    x = rng.random((16, 1, 8, 8), dtype=np.float32)
    q = pfc.quantize(m, bits=8, granularity="per_channel", calibration=x if fmt == "qdq" else None)
    kinds = [type(layer).__name__ for _, layer in pfc.modules(q)]
    # Conv, depthwise Conv and Dense are integer layers; ConvTranspose stays float (documented)
    assert kinds == ["QuantizedConv", "QuantizedConv", "QuantizedConv", "ConvTranspose", "GlobalMeanPool",
                     "Flatten", "QuantizedDense"]
    pfc.export_onnx(q, tmp_path / "q.onnx", format=fmt)
    sess = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(["output"], {"input": x})[0]
    want = q(x)
    assert np.abs(got - want).max() <= 5e-3 * np.abs(want).max()   # dynamic: ORT quantizes Dense inputs itself


def test_structured_pruning_mobilenet_depthwise_follows_the_pointwise_channels(rng):
    m = pfc.parse("Chain(Conv((3, 3), 1 => 8; pad=1), BatchNorm(8, relu6), DepthwiseConv((3, 3), 8 => 8; pad=1), "
                  "BatchNorm(8, relu6), Conv((1, 1), 8 => 16), BatchNorm(16, relu6), Conv((3, 3), 16 => 16; pad=1, "
                  "groups=4), GlobalMeanPool(), flatten, Dense(16 => 3))", seed=5)
    p = pfc.prune_structured(m, 0.5)
    assert str(p) == ("Chain(Conv((3, 3), 1 => 4, pad=1), BatchNorm(4, relu6), Conv((3, 3), 4 => 4, pad=1, groups=4), "
                      "BatchNorm(4, relu6), Conv((1, 1), 4 => 16), BatchNorm(16, relu6), Conv((3, 3), 16 => 16, pad=1, "
                      "groups=4), GlobalMeanPool(), flatten, Dense(16 => 3))")
    skipped = p.records[-1]["skipped"]
    assert "grouped" in skipped["layers[5]"] and "grouped convolution" == skipped["layers[7]"]
    keep = np.array(p.records[-1]["kept"]["layers[1]"])
    np.testing.assert_array_equal(p.layers[2].weight, m.layers[2].weight[..., keep])   # same filters, same order
    x = _input(m, rng)
    ref = m.copy()                       # zeroing the removed stem channels gives the pruned model exactly
    drop = np.setdiff1d(np.arange(8), keep)
    ref.layers[0].weight[..., drop] = 0
    ref.layers[0].bias[drop] = 0
    ref.layers[1].beta[drop] = 0
    ref.layers[1].gamma[drop] = 0
    ref.layers[3].beta[drop] = 0
    ref.layers[3].gamma[drop] = 0
    np.testing.assert_allclose(p(x), ref(x), rtol=1e-5, atol=1e-6)


def test_vector_chain_syntax():
    m = pfc.parse("Chain([Dense(2 => 3, relu), Chain([Dense(3 => 1)])])", seed=0)   # Flux's Chain of a Vector
    assert str(m) == "Chain(Dense(2 => 3, relu), Chain(Dense(3 => 1)))"
    with pytest.raises(pfc.FluxSyntaxError, match=r"unclosed '\['"):
        pfc.parse("Chain([Dense(2 => 3)")
