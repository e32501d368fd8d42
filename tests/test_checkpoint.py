"""Flux interpretation of JLD2: pfc.save / pfc.load / pfc.load_state."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import pyflux_compress as pfc
from pyflux_compress.io import jld2
from pyflux_compress.io.checkpoint import CheckpointError, chain_from_struct, state
from pyflux_compress.io.jld2 import NamedTuple

from _corpus import CORPUS
needs_corpus = pytest.mark.skipif(not CORPUS.is_dir(), reason="JLD2 corpus not available")

MODELS = [
    "Chain(Dense(4 => 8, relu), Dense(8 => 3))",
    "Chain(Dense(4 => 8, tanh; bias=false), Dense(8 => 3, σ))",
    "Chain(Conv((3, 3), 1 => 4, relu; pad=1), BatchNorm(4), MaxPool((2, 2)), flatten, Dense(196 => 10), softmax)",
    "Chain(Conv((3, 3), 2 => 3; stride=2), MeanPool((2, 2)), Chain(flatten, Dense(12 => 5, relu)))",
    "Chain(Conv((3, 3), 2 => 4, relu), GlobalMeanPool(), flatten, Dropout(0.25), Dense(4 => 2))",
]


def _inputs(model, rng):
    first = model.layers[0]
    if type(first).__name__ == "Dense":
        return rng.standard_normal((5, first.weight.shape[1])).astype(np.float32)
    cin = first.weight.shape[2]
    return rng.standard_normal((2, cin, 14, 14) if cin == 1 else (2, cin, 9, 9)).astype(np.float32)


@pytest.mark.parametrize("arch", MODELS)
def test_save_load_roundtrip(tmp_path, rng, arch):
    model = pfc.parse(arch)
    for _, layer in model.walk():              # non-trivial values everywhere (incl. running stats)
        for name, p in layer.params().items():
            p[...] = rng.standard_normal(p.shape)
        if hasattr(layer, "mu") and layer.mu is not None:
            layer.mu[...] = rng.standard_normal(layer.mu.shape)
            layer.sigma2[...] = rng.random(layer.sigma2.shape) + 0.5
    path = tmp_path / "m.jld2"
    pfc.save(path, model)
    _h5py_check(path, state(model))
    back = pfc.load(path)
    assert str(back) == str(model)
    for (pa, a), (pb, b) in zip(model.walk(), back.walk()):
        assert pa == pb
        for name in a.params():
            np.testing.assert_array_equal(a.params()[name], b.params()[name])
    x = _inputs(model, rng)
    # pfc.load keeps Julia's (F) memory order: BLAS may sum in another order -> last-bit differences only
    np.testing.assert_allclose(back(x), model(x), rtol=1e-5, atol=1e-6)
    fresh = pfc.parse(arch)                   # load_state into a fresh model: identical outputs
    pfc.load_state(fresh, path)
    np.testing.assert_array_equal(fresh(x), model(x))


def _h5py_check(path, tree) -> None:
    """h5py opens the file and every array reached through model_state equals ours (transposed)."""
    h5py = pytest.importorskip("h5py")
    seen = []
    with h5py.File(path, "r") as f:
        def walk(rec, sub):
            if isinstance(rec, h5py.Reference):
                np.testing.assert_array_equal(f[rec][()].T, sub)
                seen.append(sub)
            elif isinstance(rec, np.void):
                names = list(sub.keys()) if isinstance(sub, NamedTuple) else [str(i + 1) for i in range(len(sub))]
                values = list(sub.values()) if isinstance(sub, NamedTuple) else list(sub)
                for n, v in zip(names, values):
                    if n in rec.dtype.names:
                        walk(rec[n], v)
        walk(f["model_state"][()], tree)
    expected = []

    def arrays(t):
        if isinstance(t, np.ndarray):
            expected.append(t)
        elif isinstance(t, (tuple, NamedTuple)):
            for v in (t.values() if isinstance(t, NamedTuple) else t):
                arrays(v)
    arrays(tree)
    assert len(seen) == len(expected) > 0


def test_float64_model_keeps_dtype(tmp_path, rng):
    model = pfc.parse("Chain(Dense(3 => 4, relu), Dense(4 => 2))").astype(np.float64)
    p = tmp_path / "m64.jld2"
    pfc.save(p, model)
    back = pfc.load(p)
    assert back.layers[0].weight.dtype == np.float64
    np.testing.assert_array_equal(back.layers[1].weight, model.layers[1].weight)
    x = rng.standard_normal((2, 3))
    np.testing.assert_allclose(back(x), model(x), rtol=1e-12)


def test_state_tree_is_flux_state():
    m = pfc.parse("Chain(Dense(2 => 3, relu; bias=false), softmax)")
    st = state(m)
    assert list(st.keys()) == ["layers"]
    d, s = st.layers
    assert list(d.keys()) == ["weight", "bias", "σ"] and d.bias is False and d.σ == () and s == ()
    bn = state(pfc.parse("Chain(BatchNorm(3))")).layers[0]
    assert list(bn.keys()) == ["λ", "β", "γ", "μ", "σ²", "ϵ", "momentum", "affine", "track_stats", "active",
                               "chs"]
    assert bn["ϵ"].dtype == np.float32 and bn.active is None and bn.chs == 3
    gp, fl, dr = state(pfc.parse("Chain(GlobalMeanPool(), flatten, Dropout(0.5))")).layers
    assert gp == NamedTuple() and fl == () and list(dr.keys()) == ["p", "dims", "active", "rng"]


def test_saved_file_h5py_view(tmp_path):
    h5py = pytest.importorskip("h5py")
    m = pfc.parse("Chain(Dense(3 => 2, relu))")
    p = tmp_path / "m.jld2"
    pfc.save(p, m)
    with h5py.File(p, "r") as f:
        assert f["model_arch"][()].decode() == str(m)
        ref = f["model_state"][()]["layers"]["1"]["weight"]
        np.testing.assert_array_equal(f[ref][()].T, m.layers[0].weight)


def test_load_state_mismatch_names_path_and_shapes(tmp_path):
    p = tmp_path / "m.jld2"
    pfc.save(p, pfc.parse("Chain(Dense(4 => 8, relu), Dense(8 => 3))"))
    with pytest.raises(ValueError, match=r"layers\[2\]\.weight.*\(2, 8\).*\(3, 8\)"):
        pfc.load_state(pfc.parse("Chain(Dense(4 => 8), Dense(8 => 2))"), p)
    with pytest.raises(ValueError, match="model has 1 layers, state has 2"):
        pfc.load_state(pfc.parse("Chain(Dense(4 => 8))"), p)
    with pytest.raises(ValueError, match=r"layers\[1\]: field names differ"):
        pfc.load_state(pfc.parse("Chain(BatchNorm(4), Dense(8 => 3))"), p)
    with pytest.raises(ValueError, match="no 'nope'"):
        pfc.load_state(pfc.parse("Chain(Dense(4 => 8))"), p, key="nope")


def test_load_state_failure_leaves_model_untouched(tmp_path):
    p = tmp_path / "m.jld2"
    pfc.save(p, pfc.parse("Chain(Dense(4 => 8), Dense(8 => 3))"))
    dst = pfc.parse("Chain(Dense(4 => 8), Dense(8 => 2))")
    before = dst.layers[0].weight.copy()
    with pytest.raises(CheckpointError):
        pfc.load_state(dst, p)
    np.testing.assert_array_equal(dst.layers[0].weight, before)


def test_bool_false_bias_and_zero_bias():
    dst = pfc.parse("Chain(Dense(2 => 1))")
    dst.layers[0].bias[...] = 5
    w = np.ones((1, 2), np.float32)
    pfc.load_state(dst, NamedTuple(layers=(NamedTuple(weight=w, bias=False, σ=()),)))
    assert dst.layers[0].bias.tolist() == [0.0]
    nobias = pfc.parse("Chain(Dense(2 => 1; bias=false))")
    with pytest.raises(ValueError, match="non-zero bias"):
        pfc.load_state(nobias, NamedTuple(layers=(NamedTuple(weight=w, bias=np.ones(1, np.float32), σ=()),)))


@needs_corpus
def test_corpus_pavel_state_rebuilds_dense_chain_with_warning():
    with pytest.warns(UserWarning, match="activations are unknown"):
        m = pfc.load(CORPUS / "PavelNikolaichev__JuliaHEPNet__model.jld2")
    assert str(m) == "Chain(Dense(3 => 64), Dense(64 => 1))"
    st = jld2.load(CORPUS / "PavelNikolaichev__JuliaHEPNet__model.jld2", "model_state")
    np.testing.assert_array_equal(m.layers[1].weight, st.layers[1].weight)


@needs_corpus
@pytest.mark.parametrize("name,arch", [
    ("MichalKobiela__reinforce-circuits__mymodel.jld2", "Chain(Dense(1 => 16, relu), Dense(16 => 5), sigmoid)"),
    ("Lightglow51__777__model.jld2", None),
])
def test_corpus_ambiguous_state_asks_for_architecture(name, arch):
    with pytest.raises(ValueError, match="load_state"):
        pfc.load(CORPUS / name)
    if arch:
        m = pfc.load_state(pfc.parse(arch), CORPUS / name)
        st = jld2.load(CORPUS / name, "model_state")
        np.testing.assert_array_equal(m.layers[0].weight, st.layers[0].weight)


@needs_corpus
def test_lightglow_bool_bias_loads_into_bias_false_model():
    # Flux's `only` has no counterpart here, so load the Dense state alone
    st = jld2.load(CORPUS / "Lightglow51__777__model.jld2", "model_state")
    dense = pfc.parse("Chain(Dense(2 => 1, tanh; bias=false))")
    pfc.load_state(dense, NamedTuple(layers=st.layers[:1]))
    np.testing.assert_array_equal(dense.layers[0].weight, st.layers[0].weight)
    assert dense.layers[0].bias is None


@needs_corpus
def test_corpus_struct_models():
    ae = jld2.load(CORPUS / "MatteoFriedrich__Vector-quantized-VAE__models__autoencoder7x7x16.jld2", "autoencoder")
    enc = chain_from_struct(ae.layers[0])
    assert str(enc).startswith("Chain(Conv((4, 4), 1 => 16, pad=1, stride=2), BatchNorm(16), relu,")
    np.testing.assert_array_equal(enc.layers[0].weight, ae.layers[0].layers[0].weight)
    np.testing.assert_array_equal(enc.layers[1].mu, ae.layers[0].layers[1].μ)
    x = np.random.default_rng(0).standard_normal((1, 1, 28, 28)).astype(np.float32)
    assert enc(x).shape == (1, 16, 7, 7)
    rb = jld2.load(CORPUS / "tristanth03__UROP__test.jld2", "rebuild")             # Optimisers.Restructure.model
    assert str(chain_from_struct(rb.model)) == \
        "Chain(Dense(784 => 60, σ), Dense(60 => 60, σ), Dense(60 => 10, σ), softmax)"
    # the ConvTranspose decoder loads too now: tests/test_layer_zoo_models.py checks that file end to end
    # its Flux 0.14 Recur(LSTMCell) now loads (tests/test_recurrent.py); the closure after it cannot
    with pytest.raises(ValueError, match=r"layers\[2\]: anonymous function Main.#109#110"):
        pfc.load(CORPUS / "dpshade22__JuliaMidiParsing__trained_model.jld2")


def test_struct_dense_activation_from_type_parameter(tmp_path):
    """A Flux.Chain struct as JLD2 stores it (Dense{typeof(relu)}) -> Chain with relu."""
    from pyflux_compress.io.jld2 import Ghost, JuliaStruct, JuliaType

    w, b = np.ones((3, 2), np.float32), np.zeros(3, np.float32)
    dense_t = JuliaType("Flux.Dense", (JuliaType("NNlib.#relu"), JuliaType("Core.Array"), JuliaType("Core.Array")))
    dense = JuliaStruct(str(dense_t), {"weight": w, "bias": b}, dense_t)
    chain_t = JuliaType("Flux.Chain", ())
    chain = JuliaStruct("Flux.Chain", {"layers": (dense, Ghost("NNlib.#softmax"))}, chain_t)
    m = chain_from_struct(chain)
    assert str(m) == "Chain(Dense(2 => 3, relu), softmax)"
    bad = JuliaStruct("Flux.Chain", {"layers": (Ghost("Main.#109#110"),)}, chain_t)
    with pytest.raises(ValueError, match="Main.#109#110"):
        chain_from_struct(bad)


def test_save_and_load_state_validate_arguments(tmp_path):
    with pytest.raises(ValueError, match="model must be a Chain"):
        pfc.save(tmp_path / "x.jld2", "not a model")
    with pytest.raises(ValueError, match="model must be a Chain or layer"):
        pfc.load_state([1, 2], tmp_path / "x.jld2")
    with pytest.raises(ValueError, match="key must be a str"):
        pfc.load_state(pfc.parse("Chain(Dense(1 => 1))"), tmp_path / "x.jld2", key=3)
    with pytest.raises(FileNotFoundError):
        pfc.load(tmp_path / "missing.jld2")


@needs_corpus
def test_destructure_file_rebuilds_from_flat_vector():
    from pyflux_compress.io.checkpoint import chain_from_restructure

    path = CORPUS / "tristanth03__UROP__test.jld2"
    m = pfc.load(path)
    assert str(m) == "Chain(Dense(784 => 60, σ), Dense(60 => 60, σ), Dense(60 => 10, σ), softmax)"
    values = jld2.load(path)
    flat = values["metadata"]
    np.testing.assert_array_equal(m.layers[1].weight, flat[47100:50700].reshape(60, 60, order="F"))
    doubled = chain_from_restructure(values["rebuild"], {"flat": flat * 2})       # weights come from the vector
    np.testing.assert_array_equal(doubled.layers[2].bias, flat[51360:51370] * 2)
    with pytest.warns(UserWarning, match="no single flat parameter vector"):
        chain_from_restructure(values["rebuild"], {})


def test_bare_state_tree_rebuilds_conv_batchnorm_dense(rng):
    from pyflux_compress.io.checkpoint import chain_from_state

    m = pfc.parse("Chain(Conv((3, 3), 1 => 4, relu; pad=1, stride=2), BatchNorm(4), flatten, Dense(196 => 10))")
    m.layers[0].weight[...] = rng.standard_normal(m.layers[0].weight.shape)
    with pytest.raises(ValueError, match=r"layers\[3\].*load_state"):       # flatten: state () is ambiguous
        chain_from_state(state(m))
    m2 = pfc.Chain(*[layer for layer in m.layers if layer is not pfc.flatten])
    with pytest.warns(UserWarning, match="identity"):
        back = chain_from_state(state(m2))
    assert str(back) == "Chain(Conv((3, 3), 1 => 4, pad=1, stride=2), BatchNorm(4), Dense(196 => 10))"
    np.testing.assert_array_equal(back.layers[0].weight, m.layers[0].weight)
