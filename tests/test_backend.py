"""The backend seam (pyflux_compress.backends) and Julia detection (pyflux_compress.backends.detect).

Everything here runs without Julia: detection is exercised with fake executables (small shell scripts that
are never run — detection must not run them) in temporary directories.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import pyflux_compress as pfc
import importlib

B = importlib.import_module("pyflux_compress.backends")
from pyflux_compress.backends import detect

JULIA_ENV = ("PYTHON_JULIAPKG_EXE", "PYTHON_JULIAPKG_PROJECT", "PYTHON_JULIAPKG_OFFLINE", "JULIA_DEPOT_PATH",
             B.ENV_VAR)


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No Julia anywhere: empty PATH entries for julia, a fresh depot, no juliapkg settings; backend reset."""
    for var in JULIA_ENV:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("JULIA_DEPOT_PATH", str(tmp_path / "depot"))
    monkeypatch.setenv("PYTHON_JULIAPKG_PROJECT", str(tmp_path / "project"))
    monkeypatch.setenv("PATH", str(tmp_path / "emptybin"))
    B._reset()
    yield tmp_path
    B._reset()


def fake_exe(path) -> str:
    """An executable file named like Julia (detection only stats it; running it would fail loudly)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\necho 'fake julia must never be run' >&2\nexit 99\n")
    path.chmod(0o755)
    return str(path)


# ----------------------------------------------------------------------------------------------- detection
def test_nothing_installed_lists_every_place(clean_env):
    info = detect.find_julia()
    assert not info.found and info.executable is None
    text = " | ".join(info.looked)
    for place in ("PYTHON_JULIAPKG_EXE", "meta.json", "install", "juliaup", "PATH"):
        assert place in text


def test_explicit_exe_wins(clean_env, monkeypatch):
    exe = fake_exe(clean_env / "a" / "julia")
    fake_exe(clean_env / "emptybin" / "julia")                 # also on PATH: the explicit one wins
    monkeypatch.setenv("PYTHON_JULIAPKG_EXE", exe)
    info = detect.find_julia()
    assert (info.found, info.executable, info.how) == (True, exe, "PYTHON_JULIAPKG_EXE")


def test_explicit_exe_that_is_not_executable_is_reported(clean_env, monkeypatch):
    target = clean_env / "notexe"
    target.write_text("x")
    monkeypatch.setenv("PYTHON_JULIAPKG_EXE", str(target))
    info = detect.find_julia()
    assert not info.found and "not an executable file" in info.looked[0]


def test_existing_juliapkg_install_meta_and_download(clean_env):
    project = clean_env / "project"
    exe = fake_exe(clean_env / "elsewhere" / "bin" / "julia")
    meta = project / "pyjuliapkg" / "meta.json"
    meta.parent.mkdir(parents=True)
    meta.write_text(json.dumps({"meta_version": 5, "executable": exe}))
    info = detect.find_julia()
    assert info.found and info.executable == exe and "meta.json" in info.how and info.resolved
    meta.unlink()
    downloaded = fake_exe(project / "pyjuliapkg" / "install" / "bin" / "julia")
    info = detect.find_julia()
    assert info.found and info.executable == downloaded and "downloaded" in info.how and not info.resolved


def test_juliaup_and_path(clean_env):
    depot = clean_env / "depot"
    exe = fake_exe(depot / "juliaup" / "julia-1.10.4+0.x64.linux.gnu" / "bin" / "julia")
    (depot / "juliaup" / "juliaup.json").write_text(json.dumps(
        {"InstalledVersions": {"1.10.4+0.x64.linux.gnu": {"Path": "julia-1.10.4+0.x64.linux.gnu"}}}))
    info = detect.find_julia()
    assert info.found and info.how == "juliaup" and os.path.samefile(info.executable, exe)
    (depot / "juliaup" / "juliaup.json").unlink()
    on_path = fake_exe(clean_env / "emptybin" / "julia")
    info = detect.find_julia()
    assert info.found and info.how == "PATH" and info.executable == on_path


@pytest.mark.parametrize("value,expected", [("yes", True), ("true", True), ("1", True), ("no", False),
                                            ("", False), ("0", False)])
def test_offline_values(clean_env, value, expected, monkeypatch):
    monkeypatch.setenv("PYTHON_JULIAPKG_OFFLINE", value)
    assert detect.offline_requested() is expected
    assert detect.find_julia().offline is expected


def test_offline_bad_value_names_the_variable(clean_env, monkeypatch):
    monkeypatch.setenv("PYTHON_JULIAPKG_OFFLINE", "maybe")
    with pytest.raises(ValueError, match="PYTHON_JULIAPKG_OFFLINE"):
        detect.find_julia()


# ----------------------------------------------------------------------------------------------- selection
def test_auto_picks_numpy_fast_without_network_or_subprocess(clean_env, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("backend detection must not touch the network or start processes")

    monkeypatch.setattr(socket.socket, "connect", forbidden)
    monkeypatch.setattr(socket, "create_connection", forbidden)
    monkeypatch.setattr(subprocess, "Popen", forbidden)
    t = time.perf_counter()
    name = pfc.set_backend("auto")
    elapsed = time.perf_counter() - t
    assert name == "numpy" and pfc.backend() == "numpy"
    assert elapsed < 0.5, f"auto detection took {elapsed:.3f} s"
    info = pfc.backend_info()
    assert info["backend"] == "numpy" and info["reason"].startswith("auto: no Julia runtime installed")
    assert info["julia"]["found"] is False and "PATH" in info["reason"]
    assert "juliacall" not in sys.modules


def test_julia_fails_at_once_saying_how_to_install_and_where_it_looked(clean_env):
    t = time.perf_counter()
    with pytest.raises(RuntimeError) as err:
        pfc.set_backend("julia")
    assert time.perf_counter() - t < 0.5
    msg = str(err.value)
    assert "Install Julia" in msg and "PYTHON_JULIAPKG_EXE" in msg and "`julia` on PATH" in msg
    assert "juliaup" in msg and "set_backend('numpy')" in msg
    assert pfc.backend() == "numpy"         # a failed switch leaves the default


def test_auto_with_julia_but_no_juliacall_stays_numpy(clean_env, monkeypatch):
    monkeypatch.setenv("PYTHON_JULIAPKG_EXE", fake_exe(clean_env / "j" / "julia"))
    monkeypatch.setattr(detect, "juliacall_available", lambda: False)
    assert pfc.set_backend("auto") == "numpy"
    assert "juliacall is not installed" in pfc.backend_info()["reason"]
    with pytest.raises(RuntimeError, match="pip install juliacall"):
        pfc.set_backend("julia")


def test_auto_picks_julia_when_everything_is_installed(clean_env, monkeypatch):
    exe = fake_exe(clean_env / "j" / "julia")
    monkeypatch.setenv("PYTHON_JULIAPKG_EXE", exe)
    monkeypatch.setattr(detect, "juliacall_available", lambda: True)
    assert pfc.set_backend("auto") == "julia"
    assert exe in pfc.backend_info()["reason"]
    assert "juliacall" not in sys.modules           # selecting does not start Julia
    assert pfc.set_backend("numpy") == "numpy"


def test_offline_needs_a_resolved_project(clean_env, monkeypatch):
    monkeypatch.setenv("PYTHON_JULIAPKG_EXE", fake_exe(clean_env / "j" / "julia"))
    monkeypatch.setenv("PYTHON_JULIAPKG_OFFLINE", "yes")
    monkeypatch.setattr(detect, "juliacall_available", lambda: True)
    with pytest.raises(RuntimeError, match="PYTHON_JULIAPKG_OFFLINE"):
        pfc.set_backend("julia")
    assert pfc.set_backend("auto") == "numpy"
    meta = clean_env / "project" / "pyjuliapkg" / "meta.json"
    meta.parent.mkdir(parents=True)
    meta.write_text("{}")
    assert pfc.set_backend("julia") == "julia"


def test_environment_variable(clean_env, monkeypatch):
    monkeypatch.setenv(B.ENV_VAR, "Bogus")
    with pytest.raises(ValueError, match=B.ENV_VAR):
        pfc.backend()
    monkeypatch.setenv(B.ENV_VAR, "numpy")
    B._reset()
    assert pfc.backend() == "numpy" and B.ENV_VAR in pfc.backend_info()["reason"]


def test_bad_name(clean_env):
    with pytest.raises(ValueError, match="numpy"):
        pfc.set_backend("torch")


def test_import_never_imports_juliacall():
    code = ("import sys, pyflux_compress as pfc; pfc.set_backend('auto'); pfc.backend_info(); "
            "import pyflux_compress.backends.julia; print('juliacall' in sys.modules, 'juliapkg' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k not in JULIA_ENV}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


# ----------------------------------------------------------------------------------------------- dispatch
def test_dispatch_validates_then_routes_to_julia(clean_env, monkeypatch):
    """With the julia backend active, validate_<op> runs first (same errors), then the bridge function."""
    from pyflux_compress.backends import julia as bridge

    calls = []
    monkeypatch.setattr(bridge, "prune", lambda *a, **k: calls.append((a, k)) or "from julia", raising=True)
    monkeypatch.setattr(B, "_active", "julia")
    model = pfc.parse("Chain(Dense(4 => 3, relu), Dense(3 => 2))", seed=0)
    with pytest.raises(ValueError, match="sparsity"):
        pfc.prune(model, 1.5)                   # numpy's validate_prune rejects it before Julia is asked
    assert calls == []
    assert pfc.prune(model, 0.5, scope="global") == "from julia"
    assert calls == [((model, 0.5), {"scope": "global"})]


def test_dispatch_binds_defaults_for_validators(clean_env, monkeypatch):
    """validate_distill takes every argument positionally: the seam fills in the public defaults."""
    from pyflux_compress.backends import julia as bridge

    seen = {}
    monkeypatch.setattr(bridge, "distill", lambda *a, **k: seen.setdefault("called", True))
    monkeypatch.setattr(B, "_active", "julia")
    teacher = pfc.parse("Chain(Dense(4 => 3))", seed=0)
    student = pfc.parse("Chain(Dense(4 => 3))", seed=1)
    X = np.zeros((5, 4), np.float32)
    with pytest.raises(ValueError, match="temperature"):
        pfc.distill(teacher, student, X, temperature=-1.0)
    pfc.distill(teacher, student, X)
    assert seen == {"called": True}


def test_julia_backend_without_julia_fails_cleanly(clean_env, monkeypatch):
    """Forcing the julia backend where Julia is absent: a RuntimeError saying so, never an import of juliacall."""
    monkeypatch.setattr(B, "_active", "julia")
    from pyflux_compress.backends import julia as bridge

    monkeypatch.setattr(bridge, "_JL", None)
    model = pfc.parse("Chain(Dense(4 => 3))", seed=0)
    with pytest.raises(RuntimeError, match="Install Julia"):
        pfc.prune(model, 0.5)
    assert "juliacall" not in sys.modules


# ----------------------------------------------------------------------------------------------- conversion
class _FakeFluxCompress:
    """Stands in for the Julia module: records the bridge's constructor calls as plain tuples, and answers
    layer_info with the same tuples, so to_flux -> from_flux round-trips through the bridge's own code."""

    def chain_of(self, *layers):
        return ("Chain", tuple(layers))

    def dense_layer(self, W, b, act):
        return ("Dense", W, b, act)

    def conv_layer(self, W, b, act, stride, pad, dilation, groups, crosscor):
        return ("CrossCor" if crosscor else "Conv", W, b, act, stride, pad, dilation, groups)

    def pool_layer(self, kind, k, pad, stride):
        return (kind, k, pad, stride)

    def global_mean_pool(self):
        return ("GlobalMeanPool",)

    def dropout_layer(self, p):
        return ("Dropout", p)

    def activation(self, name):
        return ("Activation", name)

    def batchnorm_layer(self, beta, gamma, mu, sigma2, eps, momentum, act, affine, track, active, chs):
        return ("BatchNorm", beta, gamma, mu, sigma2, eps, momentum, act, affine, track, active, chs)

    def layer_info(self, x):
        return x


def test_bridge_conversion_round_trip_shares_memory(monkeypatch):
    from pyflux_compress.backends import julia as bridge

    class FakeMain:
        FluxCompress = _FakeFluxCompress()

    monkeypatch.setattr(bridge, "_JL", FakeMain())
    model = pfc.parse("Chain(Conv((3, 3), 1 => 4, relu, pad=1), BatchNorm(4), MaxPool((2, 2)), Dropout(0.5), "
                      "flatten, Chain(Dense(64 => 10; bias=false)), softmax)", seed=0)
    model[1].mu[:] = np.arange(4)
    jm = bridge.to_flux(model)
    assert jm[1][0][1] is model[0].weight            # the numpy array itself goes to Julia: no copy
    back = bridge.from_flux(jm, model)
    assert str(back) == str(model)
    x = np.random.default_rng(0).normal(size=(2, 1, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(back(x), model(x))
    assert np.shares_memory(back[0].weight, model[0].weight)
    X = np.zeros((5, 3, 4, 2), np.float32)
    J = bridge.batch_to_julia(X)
    assert J.shape == (2, 4, 3, 5) and np.shares_memory(J, X) and J.flags.f_contiguous


# ----------------------------------------------------------------------------------------------- bridge glue
class _Pair:
    """What juliacall shows for a Julia Pair: an object with .first / .second."""

    def __init__(self, first, second):
        self.first, self.second = first, second


class _Obj:
    def __init__(self, **kw):
        self.__dict__.update(kw)


class _FakeJuliaCompress(_FakeFluxCompress):
    """FluxCompress stand-in answering with the numpy backend's results, in FluxCompress's return
    conventions (tuples, Vector{Pair}, 1-based kept indices, NamedTuples with .total/.per_layer). It checks
    the bridge's own Python code — conversion, masks, records, result types — not Julia."""

    def _py(self, jm):
        from pyflux_compress.backends import julia as bridge

        return bridge.from_info(jm)

    def _jl(self, model):
        from pyflux_compress.backends import julia as bridge

        return bridge.to_flux(model)

    def as_dict(self, pairs):
        return None if pairs is None else dict(pairs)

    def _masked(self, model):
        return [_Pair(p if n == "weight" else f"{p}.{n}", m) for p, l in model.walk()
                for n, m in (getattr(l, "masks", None) or {}).items()]

    def prune(self, jm, sparsity, scope, include):
        out = pfc.prune.__wrapped_numpy__(self._py(jm), sparsity, scope=scope,
                                          include=None if include is None else list(include))
        return self._jl(out), self._masked(out)

    def sparsify(self, jm, level, pattern, include):
        out = pfc.sparsify.__wrapped_numpy__(self._py(jm), level, pattern=pattern, include=include)
        return self._jl(out), self._masked(out)

    def prune_structured(self, jm, fraction, criterion):
        out = pfc.prune_structured.__wrapped_numpy__(self._py(jm), fraction, criterion=criterion)
        rec = out.records[-1]
        return (self._jl(out), [_Pair(p, np.array(k) + 1) for p, k in rec["kept"].items()],
                [_Pair(p, r) for p, r in rec["skipped"].items()])

    def lowrank(self, jm, rank, energy):
        out = pfc.lowrank.__wrapped_numpy__(self._py(jm), rank=rank, energy=energy)
        rec = out.records[-1]
        return (self._jl(out), [_Pair(p, r) for p, r in rec["per_layer"].items()],
                [_Pair(p, r) for p, r in rec["skipped"].items()])

    def quantize(self, jm, bits, scheme, granularity, calibration, method, masks):
        model = self._py(jm)
        for key, m in (masks or {}).items():
            dict(model.walk())[key].masks = {"weight": m}
        out = pfc.quantize.__wrapped_numpy__(model, bits={k: v for k, v in bits.items()}, scheme=scheme,
                                             granularity=granularity,
                                             calibration=None if calibration is None else calibration.transpose(),
                                             method=method)
        ql = out.quantized_layers()
        return _Obj(weights=[_Pair(p, _Obj(q=l.qweight, scale=l.w_scale, zero_point=l.w_zero_point)) for p, l in ql],
                    activations=[_Pair(p, (l.act_scale, l.act_zero_point, l.act_qmin, l.act_qmax))
                                 for p, l in ql if l.calibrated])

    def share_weights(self, jm, bits, masks):
        out = pfc.share_weights.__wrapped_numpy__(self._py(jm), bits=bits)
        books = [_Pair(p, (l.centroids, l.index.astype(np.int64), l.mask)) for p, l in out.walk()
                 if hasattr(l, "centroids")]
        return None, books

    def sparsity(self, jm, include):
        r = pfc.sparsity.__wrapped_numpy__(self._py(jm), include=include)
        return _Obj(total=r["total"], per_layer=[_Pair(k, v) for k, v in r["per_layer"].items()])

    def count_params(self, jm, nonzero):
        r = pfc.count_params.__wrapped_numpy__(self._py(jm), nonzero=nonzero)
        return _Obj(total=r["total"], per_layer=[_Pair(k, v) for k, v in r["per_layer"].items()])


@pytest.fixture
def fake_julia(monkeypatch):
    from pyflux_compress.backends import julia as bridge

    class FakeMain:
        FluxCompress = _FakeJuliaCompress()

    monkeypatch.setattr(bridge, "_JL", FakeMain())
    return bridge


def _mlp():
    return pfc.parse("Chain(Dense(12 => 8, relu), Chain(Dense(8 => 6, tanh)), Dense(6 => 4))", seed=0)


def test_bridge_glue_prune_sparsify_structured(fake_julia):
    model = _mlp()
    for op, args, kwargs in (("prune", (0.5,), {"scope": "global"}), ("sparsify", (), {"pattern": "2:4"}),
                             ("prune_structured", (0.5,), {"criterion": "l2"}), ("lowrank", (), {"rank": 2})):
        a = getattr(pfc, op).__wrapped_numpy__(model, *args, **kwargs)
        b = getattr(fake_julia, op)(model, *args, **kwargs)
        assert type(b) is type(a) and str(b) == str(a), op
        ra, rb = a.records[-1], b.records[-1]
        assert ra["method"] == rb["method"] and ra["per_layer"] == rb["per_layer"], op
        for key in ("kept", "skipped", "params_before", "params_after", "total_sparsity"):
            assert ra.get(key) == rb.get(key), (op, key)
        for (p, x), (_, y) in zip(a.walk(), b.walk()):
            for name, m in (getattr(x, "masks", None) or {}).items():
                np.testing.assert_array_equal(m, y.masks[name])
    assert model.records == [] or all(r["method"] != "prune" for r in model.records)   # input untouched


def test_bridge_glue_quantize_and_sharing(fake_julia):
    model = pfc.prune(_mlp(), 0.4)
    X = np.random.default_rng(0).normal(size=(16, 12)).astype(np.float32)
    a = pfc.quantize.__wrapped_numpy__(model, bits={"layers[1]": 1, "layers[3]": 4}, granularity="per_channel",
                                       calibration=X)
    b = fake_julia.quantize(model, bits={"layers[1]": 1, "layers[3]": 4}, granularity="per_channel", calibration=X)
    assert type(b) is type(a) and [p for p, _ in b.quantized_layers()] == ["layers[1]", "layers[3]"]
    np.testing.assert_array_equal(a(X), b(X))
    s_a = pfc.share_weights.__wrapped_numpy__(model, bits=3)
    s_b = fake_julia.share_weights(model, bits=3)
    np.testing.assert_array_equal(s_a(X), s_b(X))
    assert [type(l).__name__ for _, l in s_b.walk()] == [type(l).__name__ for _, l in s_a.walk()]


def test_bridge_glue_stats(fake_julia):
    model = pfc.prune(_mlp(), 0.5)
    assert fake_julia.sparsity(model) == pfc.sparsity.__wrapped_numpy__(model)
    assert fake_julia.count_params(model, False) == pfc.count_params.__wrapped_numpy__(model, False)


def test_backend_function_survives_submodule_imports():
    """pfc.backend is a function; importing the seam's package (as every compression module does) must not
    replace it with a module object (it once did when the seam lived in a submodule named ``backend``)."""
    import pyflux_compress as pfc
    import pyflux_compress.backends  # noqa: F401
    import pyflux_compress.compression.prune  # noqa: F401

    assert callable(pfc.backend) and not isinstance(pfc.backend, type(importlib))
    assert pfc.backend() in ("numpy", "julia")
