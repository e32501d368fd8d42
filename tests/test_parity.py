"""Parity of the numpy and julia backends.

Two kinds of tests:

* **Live parity** (marked ``needs_julia``): every public compression operation runs on both backends with
  the same inputs; masks and integers must be bit-identical, floats agree to 1e-5. Skipped with the reason
  "no Julia runtime found" where no Julia is installed (``julia_skip_reason``; the skip logic is tested).
* **Static parity** (always run): what can be checked without Julia — the Flux field names/order of the
  checkpoint trees our writer produces, the shipped Julia test fixtures, the syntax the Julia loader accepts,
  and numpy transcriptions of FluxCompress's algorithms (same steps as the Julia source, indices mapped
  1-based -> 0-based) compared with the numpy backend on tie-heavy inputs.
"""
from __future__ import annotations

import os
import re

import numpy as np
import pytest

import pyflux_compress as pfc
from pyflux_compress.backends import detect

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JULIA_SRC = os.path.join(ROOT, "julia", "src")
FIXTURES = os.path.join(ROOT, "julia", "test", "fixtures")
NO_JULIA = "no Julia runtime found"


def julia_skip_reason() -> str | None:
    """Why live parity cannot run here, or None when a Julia runtime and juliacall are installed."""
    info = detect.find_julia()
    if not info.found:
        return NO_JULIA
    if not detect.juliacall_available():
        return f"Julia found at {info.executable} but juliacall is not installed"
    if info.offline and not info.resolved:
        return "PYTHON_JULIAPKG_OFFLINE is set and the juliapkg project was never resolved"
    return None


_REASON = julia_skip_reason()
needs_julia = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")


# ------------------------------------------------------------------------------------------ skip logic
def test_skip_reason_without_julia(monkeypatch):
    monkeypatch.setattr(detect, "find_julia", lambda: detect.JuliaInfo(False, looked=["nowhere"]))
    assert julia_skip_reason() == NO_JULIA


def test_skip_reason_with_julia(monkeypatch):
    monkeypatch.setattr(detect, "find_julia", lambda: detect.JuliaInfo(True, "/opt/julia/bin/julia", "PATH"))
    monkeypatch.setattr(detect, "juliacall_available", lambda: True)
    assert julia_skip_reason() is None
    monkeypatch.setattr(detect, "juliacall_available", lambda: False)
    assert "juliacall" in julia_skip_reason()
    monkeypatch.setattr(detect, "juliacall_available", lambda: True)
    monkeypatch.setattr(detect, "find_julia", lambda: detect.JuliaInfo(True, "/j", "PATH", offline=True))
    assert "OFFLINE" in julia_skip_reason()


def test_this_machine_skips_exactly_when_no_julia():
    found = detect.find_julia().found
    assert (needs_julia.args[0] if needs_julia.args else needs_julia.kwargs["condition"]) == (_REASON is not None)
    if not found:
        assert needs_julia.kwargs["reason"] == NO_JULIA


# ------------------------------------------------------------------------------------------ live parity
def _both(op: str, *args, **kwargs):
    """(numpy result, julia result) of public operation ``op``; the julia call runs with the julia backend
    active, so operations dispatched inside it (e.g. prune inside prune_iteratively) also go to Julia."""
    from pyflux_compress.backends import julia as bridge

    public = getattr(pfc, op)
    expected = public.__wrapped_numpy__(*args, **kwargs)
    previous = pfc.backend()
    pfc.set_backend("julia")
    try:
        got = getattr(bridge, op)(*args, **kwargs)
    finally:
        pfc.set_backend(previous)
    return expected, got


def _tie_mlp(seed: int = 0):
    """An MLP whose weights are rounded to 0.1: many exact magnitude ties, the hard case for parity."""
    model = pfc.parse("Chain(Dense(12 => 8, relu), Chain(Dense(8 => 8, tanh)), Dense(8 => 4))", seed=seed)
    for _, layer in model.walk():
        if getattr(layer, "weight", None) is not None:
            layer.weight = np.round(layer.weight * 10).astype(np.float32) / 10
    return model


def _cnn(seed: int = 0):
    return pfc.parse("Chain(Conv((3, 3), 4 => 8, relu, pad=1), BatchNorm(8), MaxPool((2, 2)), flatten, "
                     "Dense(128 => 16, relu), Dense(16 => 10))", seed=seed)


def _masks(model):
    return {p: dict(getattr(l, "masks", {}) or {}) for p, l in model.walk()}


def _assert_same_masks(a, b):
    ma, mb = _masks(a), _masks(b)
    assert ma.keys() == mb.keys()
    for p in ma:
        assert ma[p].keys() == mb[p].keys(), p
        for k in ma[p]:
            np.testing.assert_array_equal(ma[p][k], mb[p][k], err_msg=f"{p}.{k}")


def _assert_close_params(a, b, rtol=1e-5, atol=1e-6):
    la, lb = list(a.walk()), list(b.walk())
    assert [p for p, _ in la] == [p for p, _ in lb]
    for (p, x), (_, y) in zip(la, lb):
        px, py = x.params(), y.params()
        assert px.keys() == py.keys(), p
        for k in px:
            np.testing.assert_allclose(px[k], py[k], rtol=rtol, atol=atol, err_msg=f"{p}.{k}")


@needs_julia
@pytest.mark.parametrize("scope", ["layer", "global"])
@pytest.mark.parametrize("include", [None, "Dense", ["layers[1]", "layers[1].bias"]])
def test_prune(scope, include):
    a, b = _both("prune", _tie_mlp(), 0.6, scope=scope, include=include)
    _assert_same_masks(a, b)
    _assert_close_params(a, b, rtol=0, atol=0)
    assert a.records[-1]["per_layer"] == b.records[-1]["per_layer"]


@needs_julia
@pytest.mark.parametrize("kwargs", [{"level": 0.5}, {"pattern": "2:4"}, {"pattern": "1:3"}])
@pytest.mark.parametrize("make", [_tie_mlp, _cnn])
def test_sparsify(kwargs, make):
    a, b = _both("sparsify", make(), **kwargs)
    _assert_same_masks(a, b)
    _assert_close_params(a, b, rtol=0, atol=0)


@needs_julia
@pytest.mark.parametrize("criterion", ["l1", "l2"])
@pytest.mark.parametrize("make", [_tie_mlp, _cnn])
def test_prune_structured(criterion, make):
    a, b = _both("prune_structured", make(), 0.5, criterion=criterion)
    assert str(a) == str(b)
    assert a.records[-1]["kept"] == b.records[-1]["kept"]
    assert a.records[-1]["skipped"].keys() == b.records[-1]["skipped"].keys()
    _assert_close_params(a, b, rtol=0, atol=0)


@needs_julia
@pytest.mark.parametrize("kwargs", [{"energy": 0.9}, {"rank": 3}, {"rank": {"layers[1]": 2}}])
def test_lowrank(kwargs):
    model = pfc.parse("Chain(Dense(40 => 30, relu), Dense(30 => 20, relu), Dense(20 => 3))", seed=0)
    a, b = _both("lowrank", model, **kwargs)
    assert str(a) == str(b) and a.records[-1]["per_layer"] == b.records[-1]["per_layer"]
    la = [l for _, l in a.walk()]
    lb = [l for _, l in b.walk()]
    i = 0
    while i < len(la) - 1:           # compare factor products (signs of singular vectors may differ)
        if la[i].bias is None and la[i].weight.shape[0] < la[i].weight.shape[1]:
            np.testing.assert_allclose(la[i + 1].weight @ la[i].weight, lb[i + 1].weight @ lb[i].weight,
                                       rtol=1e-5, atol=1e-6)
            i += 2
        else:
            np.testing.assert_allclose(la[i].weight, lb[i].weight, rtol=1e-5, atol=1e-6)
            i += 1


@needs_julia
@pytest.mark.parametrize("bits,scheme,granularity", [(8, "symmetric", "per_tensor"), (8, "affine", "per_channel"),
                                                     (4, "symmetric", "per_channel"), (4, "affine", "per_tensor"),
                                                     (1, "symmetric", "per_channel"),
                                                     ({"layers[1]": 4, "layers[3]": None}, "symmetric", "per_channel")])
@pytest.mark.parametrize("calibrated", [False, True])
def test_quantize(bits, scheme, granularity, calibrated):
    model = pfc.prune(_tie_mlp(), 0.3)          # binary uses the pruning masks
    X = np.random.default_rng(0).normal(size=(32, 12)).astype(np.float32)
    a, b = _both("quantize", model, bits=bits, scheme=scheme, granularity=granularity,
                 calibration=X if calibrated else None, method="minmax")
    qa, qb = dict(a.quantized_layers()), dict(b.quantized_layers())
    assert qa.keys() == qb.keys()
    for p in qa:
        np.testing.assert_array_equal(qa[p].qweight, qb[p].qweight, err_msg=p)
        np.testing.assert_array_equal(qa[p].w_zero_point, qb[p].w_zero_point, err_msg=p)
        np.testing.assert_array_equal(qa[p].w_scale, qb[p].w_scale, err_msg=p)
        assert (qa[p].act_scale, qa[p].act_zero_point) == (qb[p].act_scale, qb[p].act_zero_point)
    np.testing.assert_allclose(a(X), b(X), rtol=1e-5, atol=1e-6)


@needs_julia
def test_quantize_percentile():
    X = np.random.default_rng(1).normal(size=(64, 12)).astype(np.float32)
    a, b = _both("quantize", _tie_mlp(), bits=8, calibration=X, method="percentile", scheme="affine")
    for (p, x), (_, y) in zip(a.quantized_layers(), b.quantized_layers()):
        np.testing.assert_allclose(x.act_scale, y.act_scale, rtol=1e-6, err_msg=p)


@needs_julia
@pytest.mark.parametrize("bits", [2, 5, {"layers[3]": 3}])
def test_share_weights(bits):
    model = pfc.prune(_tie_mlp(), 0.5)
    a, b = _both("share_weights", model, bits=bits)
    for (p, x), (_, y) in zip(a.walk(), b.walk()):
        assert type(x) is type(y), p
        if hasattr(x, "centroids"):
            np.testing.assert_array_equal(x.index, y.index, err_msg=p)
            np.testing.assert_array_equal(x.mask, y.mask, err_msg=p)
            np.testing.assert_allclose(x.centroids, y.centroids, rtol=1e-6, err_msg=p)


@needs_julia
@pytest.mark.parametrize("loss,labels", [("kl", False), ("kl", True), ("mse", False)])
def test_distill(loss, labels):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(48, 12)).astype(np.float32)
    y = rng.integers(0, 4, 48) if labels else None
    teacher = _tie_mlp(1)
    student = pfc.parse("Chain(Dense(12 => 6, relu), Dense(6 => 4))", seed=2)
    a, b = _both("distill", teacher, student, X, y, loss=loss, epochs=2, batchsize=16, opt=pfc.SGD(0.05),
                 seed=3, progress=False)
    _assert_close_params(a, b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(a.records[-1]["history"], b.records[-1]["history"], rtol=1e-5)


@needs_julia
def test_stats():
    model = pfc.prune(_cnn(), 0.7, scope="global")
    for op, kwargs in (("sparsity", {}), ("count_params", {"nonzero": True}), ("count_params", {"nonzero": False})):
        a, b = _both(op, model, **kwargs)
        assert a["per_layer"].keys() == b["per_layer"].keys()
        assert a["total"] == pytest.approx(b["total"])


@needs_julia
def test_checkpoints_cross_language(tmp_path):
    from pyflux_compress.backends import julia as bridge

    fc = bridge.julia().FluxCompress
    model = _cnn()
    X = np.random.default_rng(0).normal(size=(2, 4, 8, 8)).astype(np.float32)
    path = str(tmp_path / "py.jld2")
    pfc.save(path, model)                                         # Python writes, Julia reads
    jm = fc.load_model(path)
    np.testing.assert_allclose(np.asarray(jm(bridge.batch_to_julia(X))).transpose(), model(X), rtol=1e-5,
                               atol=1e-6)
    path2 = str(tmp_path / "jl.jld2")
    fc.save_model(path2, bridge.to_flux(model))                   # Julia writes, Python reads
    np.testing.assert_allclose(pfc.load(path2)(X), model(X), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------ static parity
# Field names and order of Flux's layer structs (FluxML/Flux.jl src/layers/basic.jl, conv.jl, normalise.jl;
# the same in Flux 0.14-0.16). Flux.state and Flux.loadmodel! match trees key by key in this order.
FLUX_FIELDS = {
    "Dense": ("weight", "bias", "σ"),
    "Conv": ("σ", "weight", "bias", "stride", "pad", "dilation", "groups"),
    "CrossCor": ("σ", "weight", "bias", "stride", "pad", "dilation"),
    "MaxPool": ("k", "pad", "stride"),
    "MeanPool": ("k", "pad", "stride"),
    "BatchNorm": ("λ", "β", "γ", "μ", "σ²", "ϵ", "momentum", "affine", "track_stats", "active", "chs"),
    "Dropout": ("p", "dims", "active", "rng"),
}
ALL_LAYERS = ("Chain(Conv((3, 3), 1 => 4, relu, pad=1), BatchNorm(4), MaxPool((2, 2)), MeanPool((1, 1)), "
              "Dropout(0.5), CrossCor((1, 1), 4 => 4), GlobalMeanPool(), flatten, Dense(4 => 10), softmax)")


def test_state_tree_has_flux_field_order():
    """The tree pfc.save writes == what Julia's `Flux.state(model)` (FluxCompress.save_model) writes."""
    from pyflux_compress.io.checkpoint import state

    model = pfc.parse(ALL_LAYERS)
    tree = state(model)
    assert list(tree.keys()) == ["layers"]
    for layer, sub in zip(model.layers, tree["layers"]):
        name = getattr(layer, "flux_name", "")
        if name in FLUX_FIELDS:
            assert tuple(sub.keys()) == FLUX_FIELDS[name], name
        else:   # activations, flatten, GlobalMeanPool: no fields (Flux.state gives () / an empty NamedTuple)
            assert len(sub) == 0, name


def _read_numbers(name: str, suffix: str) -> np.ndarray:
    with open(os.path.join(FIXTURES, f"{name}.{suffix}.txt"), encoding="ascii") as fp:
        return np.array([float(v) for v in fp.read().split()], dtype=np.float32)


@pytest.mark.parametrize("name", ["python_mlp", "python_cnn"])
def test_julia_fixtures_are_consistent(name):
    """The files julia/test/runtests.jl loads: pfc.load gives the recorded architecture and outputs, the
    state tree has Flux's keys, and x/y are stored in Julia's column-major order of the reversed shape."""
    from pyflux_compress.io import jld2

    model = pfc.load(os.path.join(FIXTURES, f"{name}.jld2"))
    arch = open(os.path.join(FIXTURES, f"{name}.arch.txt"), encoding="utf-8").read().strip()
    assert str(model) == arch
    shape = tuple(int(v) for v in open(os.path.join(FIXTURES, f"{name}.shape.txt")).read().split())
    x_julia = _read_numbers(name, "x").reshape(shape, order="F")        # Julia array, column-major
    y = model(x_julia.transpose())                                      # batch-first view of it
    np.testing.assert_allclose(y.transpose().ravel(order="F"), _read_numbers(name, "y"), rtol=1e-5, atol=1e-6)
    tree = jld2.load(os.path.join(FIXTURES, f"{name}.jld2"), "model_state")
    for layer, sub in zip(model.layers, tree["layers"]):
        if getattr(layer, "flux_name", "") in FLUX_FIELDS:
            assert tuple(sub.keys()) == FLUX_FIELDS[layer.flux_name]


def test_julia_loader_accepts_every_name_python_prints():
    """FluxCompress.model_from_arch interprets model_arch with a whitelist (julia/src/io.jl); every layer
    and activation name Python's str(model) can print must be in it."""
    from pyflux_compress.model import activations as A
    from pyflux_compress.model import layers as L

    io = open(os.path.join(JULIA_SRC, "io.jl"), encoding="utf-8").read()
    allowed = set(re.findall(r":(\w+|σ) =>", io))
    printed = {cls.flux_name for cls in (L.Dense, L.Conv, L.CrossCor, L.MaxPool, L.MeanPool, L.GlobalMeanPool,
                                         L.BatchNorm, L.Dropout)} | {"Chain", "flatten"}
    printed |= {getattr(A, n).name for n in A.__all__ if isinstance(getattr(A, n), A.Activation)}
    assert printed <= allowed, printed - allowed
    model = pfc.parse(ALL_LAYERS)
    words = set(re.findall(r"[A-Za-zσ_][A-Za-z0-9_σ]*", str(model))) - {"pad", "stride", "dilation", "bias",
                                                                           "false", "true"}
    assert words <= allowed, words - allowed


# numpy transcriptions of FluxCompress (same steps as julia/src/*.jl; Julia 1-based -> numpy 0-based)
def corder(a: np.ndarray) -> np.ndarray:
    """FluxCompress.corder: vec(permutedims(A, ndims:-1:1)) = the array in numpy C order."""
    return np.asfortranarray(a).transpose().ravel(order="F")


def jl_magnitude_masks(arrays, k):
    """julia/src/prune.jl magnitude_masks: stable ascending sort of |w| in model (C) order, first k pruned."""
    mags = np.concatenate([np.abs(corder(a)).astype(np.float64) for a in arrays])
    owner = np.concatenate([np.full(a.size, j) for j, a in enumerate(arrays)])
    lin = np.concatenate([corder(np.arange(a.size).reshape(a.shape, order="F")) for a in arrays])  # Julia linear idx
    masks = [np.ones(a.size, bool) for a in arrays]                                          # Julia vec order
    for p in np.argsort(mags, kind="stable")[:k]:
        masks[owner[p]][lin[p]] = False
    return [m.reshape(a.shape, order="F") for m, a in zip(masks, arrays)]


def jl_n_to_prune(s, n):
    return min(n, int(np.floor(s * n + 0.5)))


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_prune_rule_transcription(scope):
    model = _tie_mlp()
    for _, layer in model.walk():
        if hasattr(layer, "weight") and layer.weight is not None:
            layer.weight = np.round(layer.weight * 4).astype(np.float32) / 4      # even more ties
    pruned = pfc.prune.__wrapped_numpy__(model, 0.55, scope=scope)
    arrays = [l.weight for _, l in model.walk() if getattr(l, "flux_name", "") == "Dense"]
    if scope == "global":
        expect = jl_magnitude_masks(arrays, jl_n_to_prune(0.55, sum(a.size for a in arrays)))
    else:
        expect = [jl_magnitude_masks([a], jl_n_to_prune(0.55, a.size))[0] for a in arrays]
    got = [l.masks["weight"] for _, l in pruned.walk() if getattr(l, "flux_name", "") == "Dense"]
    for e, g in zip(expect, got):
        np.testing.assert_array_equal(e, g)


def jl_nm_mask(w, n, m):
    """julia/src/sparsify.jl nm_mask: per line of inputs, groups of m, keep the n largest (stable on -|w|)."""
    axis = 1 if w.ndim == 2 else 2
    keep = np.zeros(w.shape, bool)
    moved_w = np.moveaxis(np.abs(w), axis, -1)
    moved_k = np.moveaxis(keep, axis, -1)                 # a view: writes land in keep
    for unit in np.ndindex(moved_w.shape[:-1]):
        line = moved_w[unit]
        for g in range(0, line.size, m):
            group = line[g:g + m]
            for r in np.argsort(-group, kind="stable")[:min(n, group.size)]:
                moved_k[unit + (g + r,)] = True
    return keep


@pytest.mark.parametrize("shape", [(6, 10), (5, 8), (2, 3, 6, 4)])
@pytest.mark.parametrize("nm", [(2, 4), (1, 3)])
def test_nm_rule_transcription(shape, nm):
    from pyflux_compress.compression.sparsify import nm_mask

    w = np.round(np.random.default_rng(0).normal(size=shape) * 2).astype(np.float32) / 2
    np.testing.assert_array_equal(jl_nm_mask(w, *nm), nm_mask(w, *nm))


def jl_quantize_array(w, bits, scheme, granularity, mask=None):
    """julia/src/quantize.jl quantize_array, in float32 like the Julia code."""
    f32 = np.float32
    qmin, qmax = (-1, 1) if bits == 1 else ((-(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1) if scheme == "symmetric"
                                           else (-2 ** (bits - 1), 2 ** (bits - 1) - 1))
    w = w.astype(f32)
    ax = 0 if w.ndim == 2 else 3
    groups = [(slice(None),) * w.ndim] if granularity == "per_tensor" else \
        [tuple(slice(o, o + 1) if d == ax else slice(None) for d in range(w.ndim)) for o in range(w.shape[ax])]
    q = np.zeros(w.shape, np.int8)
    scales, zps = [], []
    for g in groups:
        x = w[g]
        if bits == 1:
            m = np.ones(x.shape, bool) if mask is None else mask[g]
            alpha = f32(np.abs(x[m]).astype(np.float64).sum() / max(m.sum(), 1))
            s = f32(1) if alpha == 0 else alpha
            q[g] = np.where(m & (alpha != 0), np.where(x >= 0, 1, -1), 0)
            scales.append(s), zps.append(0)
        elif scheme == "symmetric":
            amax = np.abs(x).max()
            s = f32(1) if amax == 0 else f32(amax / f32(qmax))
            q[g] = np.clip(np.rint(x / s), qmin, qmax)
            scales.append(s), zps.append(0)
        else:
            lo, hi = min(x.min(), f32(0)), max(x.max(), f32(0))
            s = f32(1) if hi == lo else f32((hi - lo) / f32(qmax - qmin))
            zp = int(np.clip(f32(qmin) - np.rint(lo / s), qmin, qmax))
            q[g] = np.clip(np.rint(x / s) + f32(zp), qmin, qmax)
            scales.append(s), zps.append(zp)
    return q, np.array(scales, f32), np.array(zps, np.int32)


@pytest.mark.parametrize("bits,scheme", [(8, "symmetric"), (8, "affine"), (4, "symmetric"), (3, "affine"),
                                         (1, "symmetric")])
@pytest.mark.parametrize("granularity", ["per_tensor", "per_channel"])
@pytest.mark.parametrize("shape", [(7, 9), (3, 3, 2, 5)])
def test_quantize_rule_transcription(bits, scheme, granularity, shape):
    from pyflux_compress.compression.quantize import quantize_weight

    rng = np.random.default_rng(bits)
    w = (rng.normal(size=shape) * 0.3).astype(np.float32)
    w.flat[::7] = np.float32(0.125)                 # exact halves after scaling are likely somewhere
    mask = rng.random(shape) > 0.3 if bits == 1 else None
    q, s, zp = jl_quantize_array(w, bits, scheme, granularity, mask)
    q2, s2, zp2 = quantize_weight(w, bits, scheme, granularity, mask)
    np.testing.assert_array_equal(q, q2)
    np.testing.assert_array_equal(s.reshape(s2.shape), s2)
    np.testing.assert_array_equal(zp.reshape(zp2.shape), zp2)


def jl_kmeans_1d(v, k, max_iter=100):
    """julia/src/sharing.jl kmeans_1d, loop for loop (searchsortedfirst = searchsorted side='left')."""
    v = np.asarray(v, np.float64)
    k = max(1, min(k, v.size))
    lo, hi = v.min(), v.max()
    c = np.array([lo]) if k == 1 else np.array([hi if j == k else lo + (j - 1) * ((hi - lo) / (k - 1))
                                                for j in range(1, k + 1)])
    labels = np.zeros(v.size, np.int64)
    for i in range(1, max_iter + 1):
        mids = (c[1:] + c[:-1]) / 2
        new = np.searchsorted(mids, v, side="left")
        counts = np.zeros(k, np.int64)
        sums = np.zeros(k)
        for x, j in zip(v, new):               # sequential sums, in value order
            counts[j] += 1
            sums[j] += x
        cnew = np.where(counts > 0, sums / np.maximum(counts, 1), c)
        done = i > 1 and np.array_equal(new, labels)
        labels, c = new, cnew
        if done:
            break
        order = np.argsort(c, kind="stable")
        if np.any(order != np.arange(k)):
            c = c[order]
            labels = np.argsort(order)[labels]
    c32 = c.astype(np.float32)
    labels = np.searchsorted((c32[1:].astype(np.float64) + c32[:-1]) / 2, v, side="left")
    return c32, labels


@pytest.mark.parametrize("k", [1, 4, 32])
def test_kmeans_transcription(k):
    from pyflux_compress.compression.sharing import kmeans_1d

    v = np.random.default_rng(k).normal(size=500).astype(np.float32)
    v[::5] = np.round(v[::5], 1)
    c, lab = jl_kmeans_1d(v, k)
    c2, lab2, _ = kmeans_1d(v, k)
    np.testing.assert_array_equal(c, c2)
    np.testing.assert_array_equal(lab, lab2)


def test_structured_and_lowrank_rule_transcription():
    from pyflux_compress.compression.lowrank import rank_for_energy

    model = _tie_mlp()
    res = pfc.prune_structured.__wrapped_numpy__(model, 0.5, criterion="l1")
    for path, layer in model.walk():
        if path in res.records[-1]["kept"]:
            scores = np.abs(layer.weight.astype(np.float64)).sum(axis=1)      # unit_scores(:l1), Dense rows
            k = jl_n_to_prune(0.5, scores.size)
            expect = np.sort(np.argsort(scores, kind="stable")[k:])            # kept_units, 0-based
            assert res.records[-1]["kept"][path] == expect.tolist()
    s = np.array([3.0, 2.0, 1.0, 0.5])
    for energy in (0.5, 0.9, 0.96, 1.0):
        e = np.cumsum(s ** 2) / np.sum(s ** 2)
        r = int(np.argmax(e >= energy - 1e-12)) + 1          # findfirst(>=(energy - 1e-12), e ./ e[end])
        assert r == rank_for_energy(s, energy)


@needs_julia
def test_polynomial_decay_schedule():
    fc = __import__("pyflux_compress.backends.julia", fromlist=["julia"]).julia().FluxCompress
    sched = pfc.PolynomialDecay(0.1, 0.9, begin=5, end=47, frequency=4)
    for step in range(0, 60):
        assert fc.polynomial_decay(step, initial=0.1, final=0.9, begin_step=5, end_step=47) == \
            pytest.approx(sched.sparsity_at(step), abs=1e-12)
        assert bool(fc.pruning_due(step, begin_step=5, end_step=47, frequency=4)) == sched.due(step)


@needs_julia
def test_prune_iteratively_and_archive_on_the_julia_backend(tmp_path):
    """Python-side loops/formats: on the julia backend they run the numpy code around Julia's prune."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 12)).astype(np.float32)
    y = rng.integers(0, 4, 64)
    kwargs = dict(epochs=1, batchsize=16, opt=pfc.SGD(0.01), progress=False, seed=0)
    a, b = _both("prune_iteratively", _tie_mlp(), X, y, [0.3, 0.6], **kwargs)
    _assert_same_masks(a, b)
    _assert_close_params(a, b, rtol=0, atol=0)
    previous = pfc.backend()
    try:
        pfc.set_backend("julia")
        pfc.save_compressed(str(tmp_path / "m.pfc"), a)
        back = pfc.load_compressed(str(tmp_path / "m.pfc"))
    finally:
        pfc.set_backend(previous)
    np.testing.assert_array_equal(back(X), a(X))


def test_every_dispatched_operation_has_a_julia_twin():
    """A @dispatch("op") anywhere in the package must exist in backends/julia.py (same parameters), or the
    julia backend would fail with AttributeError."""
    import glob
    import inspect

    from pyflux_compress.backends import julia as bridge

    ops = set()
    for path in glob.glob(os.path.join(ROOT, "pyflux_compress", "**", "*.py"), recursive=True):
        ops |= set(re.findall(r'^@dispatch\("(\w+)"\)', open(path, encoding="utf-8").read(), re.M))
    assert {"prune", "quantize", "distill", "share_weights"} <= ops
    for op in sorted(ops):
        twin = getattr(bridge, op, None)
        assert callable(twin), f"backends/julia.py has no {op}"
        public = getattr(pfc, op, None)
        # threads= is consumed by pfc.threads.threads_keyword above @dispatch: backends never see it
        public = getattr(public, "__wrapped__", public) if getattr(public, "__dispatch_op__", None) else public
        if public is not None and not inspect.signature(twin).parameters.keys() >= {"args", "kwargs"}:
            assert list(inspect.signature(twin).parameters) == list(inspect.signature(public).parameters), op


def test_readme_table_names_every_public_compression_function():
    import pyflux_compress as pkg

    readme = open(os.path.join(ROOT, "julia", "README.md"), encoding="utf-8").read()
    public = [name for name, module in pkg._LAZY.items() if module.startswith(".compression")
              and not (isinstance(getattr(pkg, name), type) and issubclass(getattr(pkg, name), Exception))]
    missing = [n for n in public if f"pfc.{n}" not in readme and f"{n}." not in readme and f"`{n}" not in readme]
    assert not missing, f"julia/README.md's table lacks {missing}"
