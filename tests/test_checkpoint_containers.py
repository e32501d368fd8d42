"""pfc.load on real checkpoints: containers of models, user structs, key=, arch=, clear errors."""
from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest

import pyflux_compress as pfc
from pyflux_compress.io import jld2
from pyflux_compress.io.checkpoint import CheckpointError, JuliaObject, iter_models, rebuild, state
from pyflux_compress.io.jld2 import Ghost, JuliaStruct, JuliaType, NamedTuple

from _corpus import CORPUS
needs_corpus = pytest.mark.skipif(not CORPUS.is_dir(), reason="JLD2 corpus not available")


def _chain(seed: int, n_in: int = 3, n_out: int = 2):
    return pfc.parse(f"Chain(Dense({n_in} => 4), Dense(4 => {n_out}))", seed=seed)


def _struct_chain(model) -> JuliaStruct:
    """A Flux.Chain struct value as the JLD2 reader returns it for ``@save "f.jld2" model``."""
    layers = []
    for layer in model.layers:
        t = JuliaType("Flux.Dense", (JuliaType("Base.#identity"), JuliaType("Core.Array"), JuliaType("Core.Array")))
        layers.append(JuliaStruct(str(t), {"weight": layer.weight, "bias": layer.bias}, t))
    return JuliaStruct("Flux.Chain", {"layers": tuple(layers)}, JuliaType("Flux.Chain", ()))


def _quiet_load(*args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # state-only files warn that activations are unknown
        return pfc.load(*args, **kw)


def test_tuple_namedtuple_dict_of_models_keep_their_container(tmp_path):
    enc, dec = _chain(1), _chain(2, 2, 3)
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    f = tmp_path / "pair.jld2"
    jld2.save(f, models=(state(enc), state(dec)))
    got = _quiet_load(f)
    assert isinstance(got, tuple) and len(got) == 2
    np.testing.assert_array_equal(got[1](got[0](x)), dec(enc(x)))

    f = tmp_path / "named.jld2"
    jld2.save(f, model_state=NamedTuple(encoder=state(enc), decoder=state(dec)))
    got = _quiet_load(f)
    assert isinstance(got, NamedTuple) and list(got.keys()) == ["encoder", "decoder"]
    np.testing.assert_array_equal(got.decoder(got.encoder(x)), dec(enc(x)))

    f = tmp_path / "group.jld2"                  # a Dict of models (a JLD2 group)
    jld2.save(f, nets={"a": state(enc), "b": state(dec)})
    got = _quiet_load(f)
    assert isinstance(got, dict) and sorted(got) == ["a", "b"]
    np.testing.assert_array_equal(got["a"](x), enc(x))


def test_several_top_level_models_give_a_dict_and_key_picks_one(tmp_path):
    enc, dec = _chain(1), _chain(2, 2, 3)
    f = tmp_path / "two.jld2"
    jld2.save(f, encoder=state(enc), decoder=state(dec), epoch=7)
    both = _quiet_load(f)
    assert sorted(both) == ["decoder", "encoder"]           # the plain value `epoch` is no model
    one = _quiet_load(f, key="decoder")
    np.testing.assert_array_equal(one.layers[1].weight, dec.layers[1].weight)
    with pytest.raises(CheckpointError, match=r"no 'nope' in the file.*'decoder', 'encoder', 'epoch'"):
        pfc.load(f, key="nope")
    with pytest.raises(CheckpointError, match="no Flux model found.*epoch"):
        pfc.load(f, key="epoch")
    with pytest.raises(ValueError, match="key must be a str"):
        pfc.load(f, key=3)


def test_user_struct_holding_models_becomes_a_julia_object():
    enc, dec = _chain(1), _chain(2, 2, 3)
    vae = JuliaStruct("Main.VAE", {"encoder": _struct_chain(enc), "decoder": _struct_chain(dec), "latent": 16,
                                   "log": np.arange(3.0)}, JuliaType("Main.VAE", ()))
    obj = rebuild(vae, "vae")
    assert isinstance(obj, JuliaObject) and obj.type_name == "Main.VAE"
    assert list(obj.keys()) == ["encoder", "decoder", "latent", "log"]
    assert obj.latent == 16 and obj["latent"] == 16
    np.testing.assert_array_equal(obj.decoder.layers[0].weight, dec.layers[0].weight)
    text = repr(obj)
    assert text.startswith("Main.VAE(encoder = Chain(Dense(3 => 4), Dense(4 => 2))") and "latent = 16" in text
    assert "log = Array{float64}(3)" in text
    assert [p for p, _ in iter_models(obj)] == ["encoder", "decoder"]
    with pytest.raises(AttributeError, match="Main.VAE has no field 'nope'"):
        obj.nope


def test_anonymous_function_and_unknown_struct_errors_name_type_and_path():
    good = _struct_chain(_chain(1))
    bad = JuliaStruct("Flux.Chain", {"layers": (good.layers[0], Ghost("Main.VAE.#1#2"))}, JuliaType("Flux.Chain", ()))
    vae = JuliaStruct("Main.VAE", {"encoder": good, "decoder": bad}, JuliaType("Main.VAE", ()))
    with pytest.raises(CheckpointError, match=r"vae\.decoder\.layers\[2\]: anonymous function Main\.VAE\.#1#2 "
                                              r"cannot be rebuilt.*arch="):
        rebuild(vae, "vae")
    odd_t = JuliaType("Main.MyLayer", ())
    odd = JuliaStruct("Flux.Chain", {"layers": (JuliaStruct("Main.MyLayer", {"w": np.ones(2)}, odd_t),)},
                      JuliaType("Flux.Chain", ()))
    with pytest.raises(CheckpointError, match=r"m\.layers\[1\]: unsupported Julia layer.*Main\.MyLayer"):
        rebuild(odd, "m")


@needs_corpus
def test_arch_settles_a_trailing_parameterless_layer():
    path = CORPUS / "MichalKobiela__reinforce-circuits__mymodel.jld2"
    with pytest.raises(CheckpointError, match=r"model_state\.layers\[3\].*arch="):
        pfc.load(path)
    m = pfc.load(path, arch="Chain(Dense(1 => 16, relu), Dense(16 => 5), sigmoid)")
    st = jld2.load(path, "model_state")
    x = np.linspace(-1, 1, 7, dtype=np.float32)[:, None]
    h = np.maximum(x @ st.layers[0].weight.T + st.layers[0].bias, 0)
    ref = 1 / (1 + np.exp(-(h @ st.layers[1].weight.T + st.layers[1].bias)))
    np.testing.assert_allclose(m(x), ref, rtol=1e-6)
    with pytest.raises(CheckpointError, match=r"does not match the stored weights: layers\[1\]\.weight: shape"):
        pfc.load(path, arch="Chain(Dense(1 => 8, relu), Dense(8 => 5), sigmoid)")
    with pytest.raises(ValueError, match="arch must be Flux syntax"):
        pfc.load(path, arch=3)


@needs_corpus
def test_arch_rebuilds_a_saved_flux_params():
    path = CORPUS / "tristanth03__UROP__params_m_3LS_epo10.jld2"
    m = pfc.load(path, arch="Chain(Dense(784 => 60, σ), Dense(60 => 60, σ), Dense(60 => 10), softmax)")
    data = jld2.load(path, "model_params").order.data
    np.testing.assert_array_equal(m.layers[1].weight, data[2])
    np.testing.assert_array_equal(m.layers[2].bias, data[5])
    with pytest.raises(CheckpointError, match="model has 4 parameter arrays, the stored Flux.params has 6"):
        pfc.load(path, arch="Chain(Dense(784 => 60, σ), Dense(60 => 10))")


def test_inspect_shows_each_model_of_a_container(tmp_path):
    f = tmp_path / "pair.jld2"
    jld2.save(f, model_state=NamedTuple(encoder=state(_chain(1)), decoder=state(_chain(2, 2, 3))))
    out = subprocess.run([sys.executable, "-m", "pyflux_compress.cli", "inspect", str(f), "--json"],
                         capture_output=True, text=True, check=True).stdout
    info = json.loads(out)
    assert info["kind"] == "container" and info["container"] == "NamedTuple"
    assert [m["file"] for m in info["models"]] == ["encoder", "decoder"]
    assert info["models"][1]["total_params"] == 4 * 2 + 4 + 3 * 4 + 3


def test_struct_skipconnection_parallel_upsample_from_type_parameters():
    """JLD2 keeps a SkipConnection's/Parallel's connection and Upsample's mode only as type parameters."""
    conv_t = JuliaType("Flux.Conv", (2, 4, JuliaType("Base.#identity"), JuliaType("Core.Array"), JuliaType("Core.Array")))
    w = np.arange(3 * 3 * 2 * 2, dtype=np.float32).reshape(3, 3, 2, 2) / 50

    def conv():
        return JuliaStruct(str(conv_t), {"weight": w, "bias": np.zeros(2, np.float32), "stride": (1, 1),
                                         "pad": (1, 1, 1, 1), "dilation": (1, 1), "groups": 1}, conv_t)

    skip_t = JuliaType("Flux.SkipConnection", (conv_t, JuliaType("Base.#+")))
    par_t = JuliaType("Flux.Parallel", (JuliaType("Base.#vcat"), JuliaType("Core.Tuple")))
    up_t = JuliaType("Flux.Upsample", ("bilinear", JuliaType("Core.Tuple"), JuliaType("Core.Nothing")))
    chain = JuliaStruct("Flux.Chain", {"layers": (
        JuliaStruct(str(skip_t), {"layers": conv(), "connection": Ghost("Base.#+")}, skip_t),
        JuliaStruct(str(par_t), {"connection": Ghost("Base.#vcat"), "layers": (conv(), conv())}, par_t),
        JuliaStruct(str(up_t), {"scale": (2, 2), "size": None}, up_t))}, JuliaType("Flux.Chain", ()))
    m = rebuild(chain, "model")
    assert str(m) == ("Chain(SkipConnection(Conv((3, 3), 2 => 2, pad=1), +), Parallel(vcat, Conv((3, 3), 2 => 2, "
                      "pad=1), Conv((3, 3), 2 => 2, pad=1)), Upsample(:bilinear, scale = 2))")
    np.testing.assert_array_equal(m.layers[1].layers[1].weight, w)
    anon_t = JuliaType("Flux.SkipConnection", (conv_t, JuliaType("Main.#3#4")))
    bad = JuliaStruct("Flux.Chain", {"layers": (JuliaStruct(str(anon_t), {"layers": conv()}, anon_t),)},
                      JuliaType("Flux.Chain", ()))
    with pytest.raises(CheckpointError, match=r"layers\[1\].*unsupported connection 'Main.#3#4'"):
        rebuild(bad, "model")
