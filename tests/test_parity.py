"""Parity of the numpy and julia backends.

One oracle for both sides: ``julia/test/fixtures/kernels.txt`` holds inputs, parameters and expected outputs of
every kernel the backends share (written once by ``make_kernel_fixtures.py``). Here the numpy kernels must
reproduce every case (always run); ``julia/test/runtests.jl`` checks FluxCompress's kernels against the same
file, and the live tests below (marked ``needs_julia``, skipped with "no Julia runtime found" where none is
installed) run the same cases through the real bridge. Also checked without Julia: the Flux field order of the
checkpoint trees, the checkpoint fixtures Julia loads, and the syntax the Julia loader must accept.
"""
from __future__ import annotations

import os
import re
from typing import Any

import numpy as np
import pytest

import pyflux_compress as pfc
from _toy_models import tie_mlp
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


# ------------------------------------------------------------------------------------------ kernel fixtures
KERNEL_FIXTURES = os.path.join(FIXTURES, "kernels.txt")
_DTYPES = {"f32": np.float32, "f64": np.float64, "i64": np.int64, "bool": np.bool_}


def read_kernel_fixtures(path: str = KERNEL_FIXTURES) -> list[dict[str, Any]]:
    """Parse kernels.txt (format: make_kernel_fixtures.py's docstring) into ``{kernel, id, args, outs}``."""
    cases: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as fp:
        lines = fp.read().split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line or line.startswith("#"):
            continue
        word, *rest = line.split(" ")
        if word == "case":
            cases.append({"kernel": rest[0], "id": rest[1], "args": {}, "outs": {}})
        elif word in ("in", "out"):
            name, kind, *dims = rest
            text = lines[i]
            i += 1
            if kind == "none":
                value: Any = None
            elif kind == "str":
                value = text
            else:
                value = np.array(text.split(), dtype=np.float64 if kind in ("f32", "f64") else np.int64)
                value = value.astype(_DTYPES[kind]).reshape(tuple(int(d) for d in dims))
                if not dims:
                    value = value[()]
            target = cases[-1]["args" if word == "in" else "outs"]
            base, _, index = name.partition(".")
            if index:
                target.setdefault(base, []).append(value)
            else:
                target[base] = value
        elif word != "end":
            raise ValueError(f"{path}:{i}: unexpected line {line!r}")
    return cases


CASES = read_kernel_fixtures()


def _run_case(case: dict[str, Any]) -> dict[str, Any]:
    """Call the case's kernel (the dispatching wrapper: numpy or julia, whichever backend is active)."""
    import pyflux_compress.compression.distill  # noqa: F401 - importing registers the kernels
    import pyflux_compress.compression.lowrank as lowrank
    import pyflux_compress.compression.prune as prune
    import pyflux_compress.compression.quantize  # noqa: F401
    import pyflux_compress.compression.sharing  # noqa: F401
    import pyflux_compress.compression.sparsify  # noqa: F401
    import pyflux_compress.compression.structured  # noqa: F401
    from pyflux_compress.backends import kernels

    rules = {"n_to_prune": prune.n_to_prune, "rank_for_energy": lowrank.rank_for_energy}
    fn = rules.get(case["kernel"]) or kernels()[case["kernel"]]
    args = {k: ([a.copy() for a in v] if isinstance(v, list) else v.copy() if isinstance(v, np.ndarray) else v)
            for k, v in case["args"].items()}
    result = fn(**args)
    names = list(case["outs"])
    if case["kernel"] == "magnitude_prune":
        return {"masks": list(result)}
    if case["kernel"] == "svd":
        u, s, vt = result
        return {"s": s, "recon": (u * s) @ vt}
    return dict(zip(names, result if isinstance(result, tuple) else (result,)))


def _assert_case(case: dict[str, Any], got: dict[str, Any], rtol: float) -> None:
    for name, want in case["outs"].items():
        have = got[name]
        for w, h in zip(want, have) if isinstance(want, list) else [(want, have)]:
            w, h = np.asarray(w), np.asarray(h)
            where = f"{case['kernel']} {case['id']}: {name}"
            assert w.shape == h.shape, where
            if w.dtype.kind == "f":
                np.testing.assert_allclose(h, w, rtol=rtol, atol=rtol * 1e-1, err_msg=where)
            else:
                np.testing.assert_array_equal(h, w, err_msg=where)


def test_kernel_fixtures_cover_every_kernel():
    from pyflux_compress.backends import kernels

    _run_case(CASES[0])                                   # imports every kernel module
    # train_step takes a model (a Step), not arrays: its Julia twin is tested against Flux's own training loop in
    # julia/test/runtests.jl, its bridge in tests/test_backend.py
    assert set(kernels()) - {"train_step"} <= {c["kernel"] for c in CASES}
    assert len(CASES) >= 30


@pytest.mark.parametrize("case", CASES, ids=[f"{c['kernel']}-{c['id']}" for c in CASES])
def test_numpy_kernels_reproduce_the_fixtures(case):
    """Drift on the Python side: the numpy kernels must still give the recorded outputs (exactly: they wrote
    them; the 1e-6 tolerance only absorbs BLAS/LAPACK builds)."""
    _assert_case(case, _run_case(case), rtol=1e-6)


@needs_julia
@pytest.mark.parametrize("case", CASES, ids=[f"{c['kernel']}-{c['id']}" for c in CASES])
def test_julia_kernels_reproduce_the_fixtures(case):
    """Drift on the Julia side, through the real bridge (the same cases julia/test/runtests.jl checks)."""
    previous = pfc.backend()
    pfc.set_backend("julia")
    try:
        got = _run_case(case)
    finally:
        pfc.set_backend(previous)
    _assert_case(case, got, rtol=1e-5)


def test_julia_tests_read_the_kernel_fixtures():
    """runtests.jl checks the Julia kernels against kernels.txt, one adapter per kernel name."""
    runtests = open(os.path.join(ROOT, "julia", "test", "runtests.jl"), encoding="utf-8").read()
    assert "kernels.txt" in runtests
    for kernel in {c["kernel"] for c in CASES}:
        assert f'"{kernel}"' in runtests, kernel


# ------------------------------------------------------------------------------------------ live end to end
_tie_mlp = tie_mlp


def _cnn(seed: int = 0):
    return pfc.parse("Chain(Conv((3, 3), 4 => 8, relu, pad=1), BatchNorm(8), MaxPool((2, 2)), flatten, "
                     "Dense(128 => 16, relu), Dense(16 => 10))", seed=seed)


@needs_julia
def test_operations_agree_end_to_end():
    """Whole operations on both backends: masks, integers and kept units identical, floats to 1e-5."""
    X = np.random.default_rng(0).normal(size=(8, 4, 8, 8)).astype(np.float32)
    runs = [lambda: pfc.prune(_tie_mlp(), 0.6, scope="global"), lambda: pfc.sparsify(_cnn(), pattern="2:4"),
            lambda: pfc.prune_structured(_cnn(), 0.5), lambda: pfc.lowrank(_tie_mlp(), energy=0.8),
            lambda: pfc.quantize(_cnn(), bits=4, granularity="per_channel", calibration=X),
            lambda: pfc.share_weights(pfc.prune(_tie_mlp(), 0.5), bits=3)]
    previous = pfc.backend()
    for run in runs:
        pfc.set_backend("numpy")
        a = run()
        pfc.set_backend("julia")
        try:
            b = run()
        finally:
            pfc.set_backend(previous)
        assert str(a) == str(b)
        for (p, x), (_, y) in zip(a.walk(), b.walk()):
            for k, v in x.params().items():
                np.testing.assert_allclose(y.params()[k], v, rtol=1e-5, atol=1e-6, err_msg=f"{p}.{k}")
            for k, m in (getattr(x, "masks", None) or {}).items():
                np.testing.assert_array_equal(y.masks[k], m, err_msg=f"{p}.{k}")


@needs_julia
def test_checkpoints_cross_language(tmp_path):
    from pyflux_compress.backends import julia as bridge

    jl = bridge.julia()
    fc = jl.FluxCompress
    dense = jl.seval("x -> Array{Float32}(x)")          # a column-major copy: NNlib's conv reads raw memory
    model = _cnn()
    X = np.random.default_rng(0).normal(size=(2, 4, 8, 8)).astype(np.float32)
    path = str(tmp_path / "py.jld2")
    pfc.save(path, model)                                         # Python writes, Julia reads
    jm = fc.load_model(path)
    np.testing.assert_allclose(np.asarray(jm(dense(X.T))).T, model(X), rtol=1e-5, atol=1e-6)
    path2 = str(tmp_path / "jl.jld2")
    fc.save_model(path2, jm)                                      # Julia writes, Python reads
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


@pytest.mark.parametrize("name", ["python_mlp", "python_cnn", "python_zoo", "python_seq"])
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


def _package_layers() -> list[type]:
    """The package's registered layer classes (other tests register toy layers in the same registry)."""
    from pyflux_compress.model.registry import registered

    return [c for c in registered() if c.__module__.startswith("pyflux_compress.")]


def _julia_names() -> set[str]:
    """Names julia/src/io.jl's model_from_arch accepts: the `:name => value` rows of its layer and activation
    tables, and the issue-12/13 layer names of `_FLUX_LAYERS = (...)` (resolved in Flux when read)."""
    io = open(os.path.join(JULIA_SRC, "io.jl"), encoding="utf-8").read()
    names = set(re.findall(r":(\w+|σ) =>", io))
    flux = re.search(r"const _FLUX_LAYERS = \(([^)]*)\)", io)
    assert flux, "io.jl lost its _FLUX_LAYERS table"
    return names | set(re.findall(r":(\w+)", flux.group(1)))


def test_julia_loader_accepts_every_name_python_prints():
    """FluxCompress.model_from_arch interprets model_arch with a whitelist (julia/src/io.jl); every layer
    and activation name Python's str(model) can print must be in it: every registered layer (Recur is
    load-only, Python never prints it), every activation, and every name in the shared model strings."""
    from pyflux_compress.model import activations as A

    allowed = _julia_names()
    printed = {cls.flux_name for cls in _package_layers() if cls.flux_name not in ("activation", "Recur")}
    printed |= {getattr(A, n).name for n in A.__all__ if isinstance(getattr(A, n), A.Activation)}
    assert printed <= allowed, printed - allowed
    keywords = {"pad", "stride", "dilation", "bias", "false", "true", "groups", "outpad", "affine", "eps",
                "momentum", "active", "dims", "scale", "size", "nearest", "bilinear", "nheads", "dropout_prob",
                "return_state", "xs", "cat", "track_stats", "enc", "dec", "a", "b"}
    for text in [ALL_LAYERS] + [t for _, t in _arch_lines()]:
        words = set(re.findall(r"[A-Za-zσ_][A-Za-z0-9_σ]*", str(pfc.parse(text)))) - keywords
        assert words <= allowed, (text, words - allowed)


# ------------------------------------------------------------------------------------------ Julia-only fixes
# Defects of julia/src found by reading it against Flux/Base sources (issue 14). No Julia runs here, so each
# fix is pinned twice: by a Julia test in runtests.jl (run by VERIFY.md's commands) and here by the Python
# side of the same contract.
JULIA_ARCHS = os.path.join(FIXTURES, "archs.txt")


def _arch_lines() -> list[tuple[str, str]]:
    """(minimum Flux version or "", model text) of each line of archs.txt (`[flux>=0.15] Chain(...)`)."""
    out = []
    for line in open(JULIA_ARCHS, encoding="utf-8").read().splitlines():
        if line and not line.startswith("#"):
            tag = re.match(r"\[flux>=([0-9.]+)\] ", line)
            out.append((tag.group(1), line[tag.end():]) if tag else ("", line))
    return out


def test_arch_fixture_is_what_python_prints():
    """archs.txt: model strings runtests.jl parses with model_from_arch and prints back with arch_string
    (defect 5: BatchNorm(4, eps=0.001) was a MethodError; defect 8: Dropout's p printed through Float64,
    dims/active lost), then the layers of issues 12 and 13. Each must be exactly what Python's str(model)
    prints, and together they cover every layer Python can print."""
    lines = _arch_lines()
    texts = [t for _, t in lines]
    assert any("eps=" in l for l in texts) and any("dims=" in l for l in texts)
    assert any("affine=false" in l and "track_stats=false" in l for l in texts)
    for text in texts:
        assert str(pfc.parse(text)) == text
    words = set(re.findall(r"\b([A-Za-z][A-Za-z0-9]*)\(", " ".join(texts))) | {"flatten", "first", "softmax"}
    words |= {"laststep"} & set(re.findall(r"\blaststep\b", " ".join(texts)))     # a function layer, no "("
    missing = {c.flux_name for c in _package_layers() if c.flux_name not in ("activation", "Recur")} - words
    assert not missing, f"archs.txt lacks a model with {missing}"
    assert {v for v, _ in lines} == {"", "0.15", "0.16"}


def _jl(name: str) -> str:
    return open(os.path.join(JULIA_SRC, name), encoding="utf-8").read()


def test_julia_source_fixes_present():
    """The fixes the Julia tests exercise, checked in the source where no Julia can run them:
    1 per-tensor dequantize (`_along` of a Number), 5 BatchNorm eps/momentum made Float32, 6 BatchNorm slicing
    of `nothing` fields, 8 withgradient (one forward pass), Float32 Dropout p, both flatten functions."""
    assert re.search(r"^_along\(v::Number, nd, axis\) = v$", _jl("quantize.jl"), re.M)
    assert "const _FLOAT32_KW_LAYERS = (:BatchNorm, :GroupNorm, :InstanceNorm, :LayerNorm)" in _jl("io.jl")
    assert "ex.args[1] in _FLOAT32_KW_LAYERS && (kws = _float32_kws(kws))" in _jl("io.jl")
    assert re.search(r"^_slice\(::Nothing, keep\) = nothing$", _jl("structured.jl"), re.M)
    distill = _jl("distill.jl")
    assert "withgradient(m -> distill_loss" in distill and not re.search(r"\bgradient\(lossfn", distill)
    assert "_p_str(l.p)" in _jl("io.jl") and "l.dims isa Colon" in _jl("io.jl")
    assert "is_flatten(l) && return :flatten" in _jl("structured.jl")
    assert not os.path.exists(os.path.join(JULIA_SRC, "bridge.jl"))     # defect 4: no layers built from PyArrays


# ------------------------------------------------------------------------------------------ committed types
# The Flux.state NamedTuple pfc.save writes for each layer of issues 12 and 13, pinned against the struct in
# Flux's source. `Flux.state` (src/loading.jl) keeps every field of a layer struct in declaration order and
# replaces what is not an array/number/nothing (the activation function, an RNG, `:` dims) by `()`. Codes for
# the JLD2 type written per field: F = a function/RNG field, state `()` (spelled `Tuple`); L = a child layer
# (its own NamedTuple, checked by its own row); A1/A2/A4 = Array{Float32,N}; I = Int64; B = Bool; N = Nothing;
# F32/F64 = Float32/Float64; T1/T2/T4 = NTuple{N,Int64} (Julia spells NTuple{1,Int64} as Tuple{Int64}).
#
# Sources read (the `search` tool's stored copies of FluxML/Flux.jl; a commit where the tool named one):
#   C14  src/layers/conv.jl, 0.14 generation (Conv/ConvTranspose with `groups`, `_print_conv_opt`, no outpad)
#   P2462 Flux PR #2462 "Add output padding for ConvTranspose" (merged 2024, inside 0.14.x after 0.14.16),
#        #2473 (the 7-field constructor call no longer matches) and #2477 ("Allow loading of ConvTranspose
#        state without .outpad field"): `outpad::NTuple{N,Int}` between `pad` and `dilation`, as Flux's own
#        _print_conv_opt order and third-party mirrors of the struct show. Flux's 0.15/0.16 conv.jl text itself
#        was not in the stored copies: the position of outpad is from these, not read from that file.
#   B14  src/layers/basic.jl, 0.14 generation (`@functor`; Chain{T}, SkipConnection{T,F}(layers, connection),
#        Parallel{F,T}(connection, layers), Scale{F,A,B}(scale, bias, σ), Embedding{W}(weight))
#   N14/N15 src/layers/normalise.jl, 0.14 (`@functor`, `_greek_ascii_depwarn`) and 0.15/0.16 (`@layer`)
#        generations: LayerNorm{F,D,T,N}(λ, diag, ϵ, size, affine); GroupNorm(G, λ, β, γ, μ, σ², ϵ, momentum,
#        affine, track_stats, active, chs) (0.15: μ::Nothing, σ²::Nothing); InstanceNorm = BatchNorm's fields;
#        AlphaDropout{F,R}(p, active, rng); Dropout{F,D,R}(p, dims, active, rng)
#   U    src/layers/upsample.jl commit 05a9a2d810a8: Upsample{mode,S,T}(scale, size), PixelShuffle(r)
#   C14  also: AdaptiveMaxPool{S,O}/AdaptiveMeanPool{S,O}(out::NTuple{O,Int}), `struct GlobalMaxPool end`
#   R15  src/layers/recurrent.jl, 0.15 generation (`@layer`): RNNCell{F,I,H,V}(σ, Wi, Wh, bias),
#        LSTMCell{I,H,V}(Wi, Wh, bias), GRUCell{I,H,V}(Wi, Wh, b), GRUv3Cell{I,H,V,HH}(Wi, Wh, b, Wh_h̃),
#        RNN{M}/LSTM{M}/GRU{M}/GRUv3{M}(cell); Flux PR #2557 (0.16) made the first parameter `return_state`
#        (RNN{S,M}), which adds no field.
#   R14  src/layers/recurrent.jl, 0.14 generation: mutable struct Recur{T,S}(cell, state), cells with a
#        trailing `state0` (LSTMCell{A,V,S}(Wi, Wh, b, state0)); read-only here, checked on the corpus file.
#   A14  src/layers/attention.jl commit 0b108231f1ff: MultiHeadAttention{P1,D,P2}(nheads, q_proj, k_proj,
#        v_proj, attn_drop, out_proj)
FLUX_STATE = {
    # name: (layer text, source, ((field, code), ...))
    "ConvTranspose": ("ConvTranspose((3, 3), 4 => 2, relu, pad=1, stride=2)", "C14+P2462",
                      (("σ", "F"), ("weight", "A4"), ("bias", "A1"), ("stride", "T2"), ("pad", "T4"),
                       ("outpad", "T2"), ("dilation", "T2"), ("groups", "I"))),
    "Conv": ("Conv((3, 3), 4 => 8, relu, pad=1, groups=2)", "C14",
             (("σ", "F"), ("weight", "A4"), ("bias", "A1"), ("stride", "T2"), ("pad", "T4"), ("dilation", "T2"),
              ("groups", "I"))),
    "CrossCor": ("CrossCor((3, 3), 2 => 4, pad=1; bias=false)", "C14",
                 (("σ", "F"), ("weight", "A4"), ("bias", "B"), ("stride", "T2"), ("pad", "T4"), ("dilation", "T2"))),
    "SkipConnection": ("SkipConnection(Dense(2 => 2), +)", "B14", (("layers", "L"), ("connection", "F"))),
    "Parallel": ("Parallel(vcat, Dense(2 => 2), Dense(2 => 3))", "B14", (("connection", "F"), ("layers", "L"))),
    "Chain": ("Chain(Dense(2 => 2))", "B14", (("layers", "L"),)),
    "LayerNorm": ("LayerNorm(4)", "N14/N15",
                  (("λ", "F"), ("diag", "L"), ("ϵ", "F32"), ("size", "T1"), ("affine", "B"))),
    "Scale": ("Scale(4, tanh; bias=false)", "B14", (("scale", "A1"), ("bias", "B"), ("σ", "F"))),
    "GroupNorm": ("GroupNorm(4, 2)", "N14/N15",
                  (("G", "I"), ("λ", "F"), ("β", "A1"), ("γ", "A1"), ("μ", "N"), ("σ²", "N"), ("ϵ", "F32"),
                   ("momentum", "F32"), ("affine", "B"), ("track_stats", "B"), ("active", "N"), ("chs", "I"))),
    "InstanceNorm": ("InstanceNorm(4, affine=true)", "N14/N15",
                     (("λ", "F"), ("β", "A1"), ("γ", "A1"), ("μ", "N"), ("σ²", "N"), ("ϵ", "F32"), ("momentum", "F32"),
                      ("affine", "B"), ("track_stats", "B"), ("active", "N"), ("chs", "I"))),
    "AlphaDropout": ("AlphaDropout(0.2)", "N14/N15", (("p", "F64"), ("active", "N"), ("rng", "F"))),
    "AdaptiveMaxPool": ("AdaptiveMaxPool((2, 2))", "C14", (("out", "T2"),)),
    "AdaptiveMeanPool": ("AdaptiveMeanPool((1, 1))", "C14", (("out", "T2"),)),
    "GlobalMaxPool": ("GlobalMaxPool()", "C14", ()),
    "Upsample": ("Upsample(:bilinear, scale = (2, 3))", "U", (("scale", "T2"), ("size", "N"))),
    "PixelShuffle": ("PixelShuffle(2)", "U", (("r", "I"),)),
    "Embedding": ("Embedding(10 => 4)", "B14", (("weight", "A2"),)),
    # Flux >= 0.13.15 src/layers/basic.jl: struct EmbeddingBag{F, W}; weight::W; reduction::F (a function: ())
    "EmbeddingBag": ("EmbeddingBag(10 => 4, sum)", "B14", (("weight", "A2"), ("reduction", "F"))),
    "RNNCell": ("RNNCell(2 => 3, tanh)", "R15", (("σ", "F"), ("Wi", "A2"), ("Wh", "A2"), ("bias", "A1"))),
    "LSTMCell": ("LSTMCell(2 => 3)", "R15", (("Wi", "A2"), ("Wh", "A2"), ("bias", "A1"))),
    "GRUCell": ("GRUCell(2 => 3; bias=false)", "R15", (("Wi", "A2"), ("Wh", "A2"), ("b", "B"))),
    "GRUv3Cell": ("GRUv3Cell(2 => 3)", "R15", (("Wi", "A2"), ("Wh", "A2"), ("b", "A1"), ("Wh_h̃", "A2"))),
    "RNN": ("RNN(2 => 3, relu)", "R15", (("cell", "L"),)),
    "LSTM": ("LSTM(2 => 3; return_state=true)", "R15", (("cell", "L"),)),
    "GRU": ("GRU(2 => 3)", "R15", (("cell", "L"),)),
    "GRUv3": ("GRUv3(2 => 3)", "R15", (("cell", "L"),)),
    "MultiHeadAttention": ("MultiHeadAttention(4; nheads=2)", "A14",
                           (("nheads", "I"), ("q_proj", "L"), ("k_proj", "L"), ("v_proj", "L"), ("attn_drop", "L"),
                            ("out_proj", "L"))),
    "Dropout": ("Dropout(0.5)", "N14/N15", (("p", "F64"), ("dims", "F"), ("active", "N"), ("rng", "F"))),
}
_CODES = {"F": "Tuple", "A1": "Core.Array{Core.Float32,1}", "A2": "Core.Array{Core.Float32,2}",
          "A4": "Core.Array{Core.Float32,4}", "I": "Core.Int64", "B": "Core.Bool", "N": "Core.Nothing",
          "F32": "Core.Float32", "F64": "Core.Float64", "T1": "Tuple{Core.Int64}", "T2": "NTuple{2,Core.Int64}",
          "T4": "NTuple{4,Core.Int64}"}


def test_flux_state_table_covers_every_written_layer():
    """Every layer Python can write (registered, not load-only) has a row, and the rows agree with the
    shorter FLUX_FIELDS table of the issue-14 layers."""
    skip = ("activation", "Recur", "flatten", "first", "laststep")
    written = {c.flux_name for c in _package_layers() if c.flux_name not in skip}
    assert written - set(FLUX_STATE) <= {"Dense", "MaxPool", "MeanPool", "BatchNorm", "GlobalMeanPool"}
    for name, fields in FLUX_FIELDS.items():
        if name in FLUX_STATE:
            assert tuple(f for f, _ in FLUX_STATE[name][2]) == fields, name


@pytest.mark.parametrize("name", sorted(FLUX_STATE))
def test_committed_types_match_flux_structs(name):
    """pfc.save's NamedTuple for the layer: Flux's field names, in Flux's order, each written as the Julia type
    Flux.state holds for it (JLD2 commits `NamedTuple{names, Tuple{types...}}` from exactly these)."""
    from pyflux_compress.io.checkpoint import state
    from pyflux_compress.io.jld2._writer import type_of

    text, _source, fields = FLUX_STATE[name]
    layer = pfc.parse(f"Chain({text})").layers[0]
    tree = state(pfc.parse(f"Chain({text})"))["layers"][0]
    assert layer.flux_name == name
    assert tuple(tree.keys()) == tuple(f for f, _ in fields)
    for field, code in fields:
        if code == "L":
            assert type_of(tree[field]).key.startswith(("Core.NamedTuple{", "Tuple{", "NTuple{")), field
        else:
            assert type_of(tree[field]).key == _CODES[code], (name, field, type_of(tree[field]).key)
    key = type_of(tree).key if fields else None
    if fields:   # the committed NamedTuple type names the fields in the same order
        assert key.startswith("Core.NamedTuple{" + repr(tuple(f for f, _ in fields)) + ",")


def _committed(path):
    from pyflux_compress.io.jld2._reader import open_file

    reader, _ = open_file(path)
    h = reader.h5
    return [reader.committed(a) for a in h.links(h.links(h.root)["_types"]).values()]


def test_convtranspose_committed_bytes_match_the_corpus(tmp_path):
    """The corpus autoencoder (MatteoFriedrich/Vector-quantized-VAE, JLD2 0.4, Julia 1.9.4) holds real
    Flux.ConvTranspose structs from a Flux before outpad: its compound's members (λ-like σ is a ghost) are
    weight, bias, stride, pad, dilation, groups. Our ConvTranspose NamedTuple has the same members with the
    same HDF5 datatype bytes, plus outpad (PR #2462) between pad and dilation; the committed NTuple{2,Int64}
    and NTuple{4,Int64} types are byte-identical."""
    from _corpus import CORPUS
    from test_jld2_writer import normalize

    src = CORPUS / "MatteoFriedrich__Vector-quantized-VAE__models__autoencoder7x7x16.jld2"
    theirs = {str(c.jtype).split("{")[0]: c for c in _committed(src)}
    model = pfc.parse("Chain(ConvTranspose((3, 3), 32 => 16, pad=1))", seed=0)
    pfc.save(tmp_path / "ct.jld2", model)
    ours = _committed(tmp_path / "ct.jld2")
    flux_ct = theirs["Flux.ConvTranspose"]
    nt = next(c for c in ours if str(c.jtype).startswith("Core.NamedTuple{(:σ,:weight,"))
    t_members = [(n, d.raw) for n, _, d in flux_ct.dt.members]
    o_members = [(n, d.raw) for n, _, d in nt.dt.members]
    assert [n for n, _ in t_members] == ["weight", "bias", "stride", "pad", "dilation", "groups"]
    assert [m for m in o_members if m[0] != "outpad"] == t_members
    assert [n for n, _ in o_members] == ["weight", "bias", "stride", "pad", "outpad", "dilation", "groups"]
    ints = lambda cs: {normalize(c.jtype): c.dt.raw for c in cs if set(normalize(c.jtype)[6:-1].split(",")) == {"Core.Int64"}}  # noqa: E731
    ours_t, theirs_t = ints(ours), ints(_committed(src))
    assert set(ours_t) == {"Tuple{Core.Int64,Core.Int64}", "Tuple{Core.Int64,Core.Int64,Core.Int64,Core.Int64}"}
    assert all(theirs_t[k] == raw for k, raw in ours_t.items())


def test_recur_fields_match_the_corpus():
    """Flux <= 0.14's Recur (R14), read from the corpus file dpshade22/JuliaMidiParsing (Recur{LSTMCell}):
    the fields recur.py/recurrent.py read are the ones JLD2.jl wrote for those structs."""
    from _corpus import CORPUS
    from pyflux_compress.io import jld2

    value = jld2.load(CORPUS / "dpshade22__JuliaMidiParsing__trained_model.jld2", "model")
    recur = value.fields["layers"][0]
    assert recur.type_name.startswith("Flux.Recur") and list(recur.fields) == ["cell", "state"]
    assert list(recur.fields["cell"].fields) == ["Wi", "Wh", "b", "state0"]


@needs_julia
@pytest.mark.parametrize("text", [t for v, t in _arch_lines() if not v])
def test_layer_zoo_checkpoints_cross_language(tmp_path, text):
    """Each model string of archs.txt (the ones every Flux 0.14-0.16 builds): Python writes, FluxCompress
    loads it and prints the same string; Julia writes, Python loads the same model with the same arrays."""
    from pyflux_compress.backends import julia as bridge

    fc = bridge.julia().FluxCompress
    model = pfc.parse(text, seed=0)
    pfc.save(str(tmp_path / "py.jld2"), model)
    jm = fc.load_model(str(tmp_path / "py.jld2"))
    assert str(fc.arch_string(jm)) == text
    fc.save_model(str(tmp_path / "jl.jld2"), jm)
    back = pfc.load(str(tmp_path / "jl.jld2"))
    assert str(back) == text
    for (p, x), (_, y) in zip(model.walk(), back.walk()):
        for k, v in x.params().items():
            np.testing.assert_array_equal(y.params()[k], v, err_msg=f"{p}.{k}")
