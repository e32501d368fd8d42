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




# ------------------------------------------------------------------------------------------ Julia-only fixes
# Defects of julia/src found by reading it against Flux/Base sources (issue 14). No Julia runs here, so each
# fix is pinned twice: by a Julia test in runtests.jl (run by VERIFY.md's commands) and here by the Python
# side of the same contract.
JULIA_ARCHS = os.path.join(FIXTURES, "archs.txt")


def test_arch_fixture_is_what_python_prints():
    """archs.txt: model strings runtests.jl parses with model_from_arch and prints back with arch_string
    (defect 5: BatchNorm(4, eps=0.001) was a MethodError; defect 8: Dropout's p printed through Float64,
    dims/active lost). Each line must be exactly what Python's str(model) prints."""
    lines = [l for l in open(JULIA_ARCHS, encoding="utf-8").read().splitlines() if l and not l.startswith("#")]
    assert any("eps=" in l for l in lines) and any("dims=" in l for l in lines)
    assert any("affine=false" in l and "track_stats=false" in l for l in lines)
    for line in lines:
        assert str(pfc.parse(line)) == line


def _jl(name: str) -> str:
    return open(os.path.join(JULIA_SRC, name), encoding="utf-8").read()


def test_julia_source_fixes_present():
    """The fixes the Julia tests exercise, checked in the source where no Julia can run them:
    1 per-tensor dequantize (`_along` of a Number), 5 BatchNorm eps/momentum made Float32, 6 BatchNorm slicing
    of `nothing` fields, 8 withgradient (one forward pass), Float32 Dropout p, both flatten functions."""
    assert re.search(r"^_along\(v::Number, nd, axis\) = v$", _jl("quantize.jl"), re.M)
    assert "f === BatchNorm && (kws = _float32_kws(kws))" in _jl("io.jl")
    assert re.search(r"^_slice\(::Nothing, keep\) = nothing$", _jl("structured.jl"), re.M)
    distill = _jl("distill.jl")
    assert "withgradient(m -> distill_loss" in distill and not re.search(r"\bgradient\(lossfn", distill)
    assert "_p_str(l.p)" in _jl("io.jl") and "l.dims isa Colon" in _jl("io.jl")
    assert "is_flatten(l) && return :flatten" in _jl("structured.jl")
    assert not os.path.exists(os.path.join(JULIA_SRC, "bridge.jl"))     # defect 4: no layers built from PyArrays
