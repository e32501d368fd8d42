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
from _toy_models import tie_mlp
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


@pytest.mark.parametrize("value,expected", [("yes", True), ("no", False)])
def test_offline_values(clean_env, value, expected, monkeypatch):
    monkeypatch.setenv("PYTHON_JULIAPKG_OFFLINE", value)
    assert detect.offline_requested() is expected
    assert detect.find_julia().offline is expected


@pytest.mark.parametrize("value", ["true", "1", "0", "false", "", "YES"])
def test_offline_values_juliapkg_rejects_are_errors(clean_env, value, monkeypatch):
    """Issue 14 defect 7: pyjuliapkg takes only 'yes'/'no' (state.py get_config_bool) and raises on the rest;
    treating 'true'/'1' as offline would promise a mode juliacall then refuses to start in."""
    monkeypatch.setenv("PYTHON_JULIAPKG_OFFLINE", value)
    with pytest.raises(ValueError, match="PYTHON_JULIAPKG_OFFLINE must be 'yes' or 'no'"):
        detect.offline_requested()


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


# ----------------------------------------------------------------------------------------------- kernel seam
# The julia backend runs the same Python code as the numpy backend; only the array kernels (backends.kernel)
# go through the bridge, here through tests/fake_pythoncall.py (PythonCall's documented conversion rules with
# FluxCompress's kernel conventions behind them: 1-based indices, column-major arrays, tuples for Pairs,
# attribute access for NamedTuples, and nothing but kernel_* functions).
from fake_pythoncall import FakeMain, Pair, to_python  # noqa: E402

from pyflux_compress._files import jsonable  # noqa: E402


@pytest.fixture
def fake_julia(clean_env, monkeypatch):
    """The julia backend active, juliacall replaced by the PythonCall fake; yields the fake FluxCompress."""
    from pyflux_compress.backends import julia as bridge

    main = FakeMain()
    monkeypatch.setattr(bridge, "_JL", main)
    B._active = "julia"
    assert pfc.backend() == "julia"
    yield main.FluxCompress


def _on(name: str, fn, *args, **kwargs):
    """Run ``fn`` with backend ``name`` active (the fake stays installed for "julia")."""
    B._active = name
    try:
        return fn(*args, **kwargs)
    finally:
        B._active = "julia"


_mlp = tie_mlp


def _cnn(seed: int = 0):
    return pfc.parse("Chain(Conv((3, 3), 2 => 4, relu, pad=1), BatchNorm(4), MaxPool((2, 2)), Dropout(0.25), "
                     "flatten, Dense(64 => 8, relu), Dense(8 => 3))", seed=seed)


def _same(a, b, what):
    assert type(a) is type(b) and str(a) == str(b), what
    assert jsonable(a.records) == jsonable(b.records), what
    for (p, x), (_, y) in zip(a.walk(), b.walk()):
        for k, v in x.params().items():
            np.testing.assert_array_equal(v, y.params()[k], err_msg=f"{what}: {p}.{k}")
        for k, m in (getattr(x, "masks", None) or {}).items():
            np.testing.assert_array_equal(m, y.masks[k], err_msg=f"{what}: mask {p}.{k}")


X8 = np.random.default_rng(0).normal(size=(10, 2, 8, 8)).astype(np.float32)
X12 = np.random.default_rng(1).normal(size=(16, 12)).astype(np.float32)
CASES = [
    ("prune global", lambda: pfc.prune(_mlp(), 0.55, scope="global"), "kernel_magnitude_masks"),
    ("prune layer+bias", lambda: pfc.prune(_mlp(), 0.3, include=["Dense", "layers[1].bias"]),
     "kernel_magnitude_masks"),
    ("sparsify level", lambda: pfc.sparsify(_mlp(), 0.5), "kernel_magnitude_masks"),
    ("sparsify 2:4", lambda: pfc.sparsify(_cnn(), pattern="2:4"), "kernel_nm_mask"),
    ("structured", lambda: pfc.prune_structured(_cnn(), 0.5, criterion="l2"), "kernel_select_units"),
    ("lowrank energy", lambda: pfc.lowrank(_mlp(), energy=0.6), "kernel_singular_values"),
    ("lowrank rank", lambda: pfc.lowrank(_mlp(), rank=2), "kernel_svd"),
    ("quantize calibrated", lambda: pfc.quantize(_cnn(), bits={"layers[1]": 4, "layers[6]": 8},
                                                 granularity="per_channel", calibration=X8),
     "kernel_quantize_array"),
    ("quantize binary pruned", lambda: pfc.quantize(pfc.prune(_mlp(), 0.5), bits=1), "kernel_quantize_array"),
    ("share weights", lambda: pfc.share_weights(pfc.prune(_mlp(), 0.5), bits=3), "kernel_kmeans_1d"),
    ("distill cnn teacher", lambda: pfc.distill(_cnn(0), _cnn(1), X8, np.arange(10) % 3, epochs=2, batchsize=4,
                                                progress=False), "kernel_distill_loss_grad"),
]


@pytest.mark.parametrize("what,run,kernel", CASES, ids=[c[0] for c in CASES])
def test_records_and_results_identical_across_backends(fake_julia, what, run, kernel):
    """Issue 11 item 3: Python builds the models and writes the records once for both backends. Also pins
    issue 14 defects 2 (the bridge read Pair.first/.second; PythonCall gives tuples) and 4 (the bridge built
    Flux layers on strided PyArrays; it now calls kernels only: the fake has nothing else, so a Conv teacher or
    a Conv calibration pass would fail here)."""
    expected = _on("numpy", run)
    got = run()
    _same(expected, got, what)
    assert kernel in fake_julia.calls, (what, fake_julia.calls)
    if what == "quantize calibrated":
        np.testing.assert_array_equal(expected(X8), got(X8))
        assert kernel in fake_julia.calls and "kernel_dequantize_array" in fake_julia.calls


def test_stats_run_in_python_on_every_backend(fake_julia):
    """sparsity and count_params are plain Python: same result and the same validation on both backends."""
    model = pfc.prune(_mlp(), 0.5)
    assert pfc.sparsity(model) == _on("numpy", pfc.sparsity, model)
    assert pfc.count_params(model, False) == _on("numpy", pfc.count_params, model, False)
    with pytest.raises(ValueError, match="include"):
        pfc.sparsity(model, include="layers[9]")
    with pytest.raises(ValueError, match="nonzero"):
        pfc.count_params(model, nonzero="yes")


@pytest.mark.parametrize("bits", [0, 17, 2.5, True])
def test_share_weights_validates_on_julia(fake_julia, bits):
    """Issue 11: bits=0 was a silent no-op on the julia backend (no validator); now the one Python check runs."""
    with pytest.raises(ValueError, match="bits"):
        pfc.share_weights(_mlp(), bits=bits)
    assert fake_julia.calls == []


def test_validation_runs_before_any_kernel(fake_julia):
    with pytest.raises(ValueError, match="sparsity"):
        pfc.prune(_mlp(), 1.5)
    bad = _mlp()
    bad[0].weight[0, 0] = np.nan
    with pytest.raises(ValueError, match=r"layers\[1\]"):
        pfc.prune(bad, 0.5)
    assert fake_julia.calls == []


def test_non_finite_weights_named_on_both_backends(fake_julia):
    """The prune kernel's NaN check (NonFiniteArray) names the parameter the same way on both backends."""
    bad = _mlp()
    bad[2].weight[1, 1] = np.inf
    msgs = []
    for name in ("numpy", "julia"):
        with pytest.raises(ValueError) as err:
            _on(name, pfc.prune, bad, 0.5)
        msgs.append(str(err.value))
    assert msgs[0] == msgs[1] and "layers[3]" in msgs[0]


def _fit_run(seed: int = 0, prune: bool = False, opt=None):
    """A BatchNorm CNN (running statistics travel with the parameters) trained twice with one optimiser."""
    model = _cnn(seed).layers
    model = pfc.Chain(*[l for l in model if type(l).__name__ != "Dropout"])  # Dropout draws Julia's RNG
    model = pfc.prune(model, 0.5) if prune else model
    opt = opt or pfc.SGD(0.05, momentum=0.9, weight_decay=1e-3)
    hist = [pfc.fit(model, X8, np.arange(10) % 3, epochs=2, batchsize=4, opt=opt, progress=False, seed=seed,
                    threads=1) for _ in range(2)]                  # the second call continues the optimiser
    return model, [h.loss + h.accuracy for h in hist]


@pytest.mark.parametrize("prune", [False, True])
def test_training_step_is_a_kernel(fake_julia, prune):
    """Issue 11 Build 3: fit's step (forward, loss, backward, update) is the kernel train_step. Through the
    bridge (the model rebuilt from its Flux syntax, arrays by Flux path, data with the dims reversed, labels
    1-based, the optimiser state kept in a session across steps and fit calls) the result is the numpy one."""
    expected, ehist = _on("numpy", _fit_run, prune=prune)
    got, hist = _fit_run(prune=prune)
    assert fake_julia.calls.count("kernel_train_step") == 2 * 2 * 3      # 2 calls x 2 epochs x 3 batches
    assert hist == ehist
    _same(expected, got, "fit")
    np.testing.assert_array_equal(expected[1].mu, got[1].mu)            # BatchNorm statistics came back too
    assert not (expected[1].mu == 0).all()
    if prune:
        assert (got[-1].weight[~got[-1].masks["weight"]] == 0).all()


@pytest.mark.parametrize("change,match", [
    (lambda m: {"opt": type("MyOpt", (), {"step": lambda self, p, g: None})()}, "pfc.Adam or pfc.SGD"),
    (lambda m: {"loss": type("L", (), {"name": "mse", "value_and_grad": lambda s, a, b: (0.0, a)})()}, "named"),
    (lambda m: {"model": m.astype(np.float64)}, "float32"),
])
def test_training_step_on_julia_refuses_what_flux_cannot_mirror(fake_julia, change, match):
    model = _mlp()
    kwargs = {"model": model, "opt": None, "loss": "logitcrossentropy", **change(model)}
    with pytest.raises(ValueError, match=match):
        pfc.fit(kwargs.pop("model"), X12, np.arange(16) % 4, progress=False, **kwargs)
    assert fake_julia.calls == []


def test_pythoncall_fake_follows_the_documented_rules():
    """The fake itself: Pair -> tuple (no .first), NamedTuple -> attribute access only, Julia arrays
    column-major through __array_interface__, BitArrays copied through __array__."""
    from fake_pythoncall import JlArray, NamedTuple, PyArray, to_julia

    p = to_python(Pair("layers[1]", 3))
    assert p == ("layers[1]", 3) and not hasattr(p, "first")
    nt = to_python(NamedTuple(total=1.5, per_layer=(Pair("a", 1),)))
    assert nt.total == 1.5 and nt.per_layer == (("a", 1),)
    with pytest.raises(TypeError):
        nt[0]
    a = np.asarray(to_python(JlArray(np.arange(6).reshape(2, 3))))
    assert a.flags.f_contiguous and a.shape == (2, 3)
    w = np.zeros((3, 4), np.float32)
    j = to_julia((w, [w], None))
    assert isinstance(j[0], PyArray) and j[0].py is w and j[0].py.flags.c_contiguous   # NumPy's strides kept
    assert not isinstance(j[1], (tuple, PyArray)) and j[2] is None                       # a list is a PyList


def test_bridge_calls_only_kernels_and_imports_no_compression_module():
    """backends/ sits below compression/: the bridge imports nothing from it (the old bridge rebuilt models
    through private helpers of compression/quantize.py and formed an import cycle)."""
    import ast
    import pathlib

    from pyflux_compress.backends import julia as bridge

    for path in pathlib.Path(bridge.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert not {"compression", "model", "io"} & set((node.module or "").split(".")), (path.name,
                                                                                               node.module)
    import pyflux_compress.compression.distill  # noqa: F401 - registers every kernel module's kernels
    import pyflux_compress.compression.lowrank  # noqa: F401
    import pyflux_compress.compression.prune  # noqa: F401
    import pyflux_compress.compression.quantize  # noqa: F401
    import pyflux_compress.compression.sharing  # noqa: F401
    import pyflux_compress.compression.sparsify  # noqa: F401
    import pyflux_compress.compression.structured  # noqa: F401

    assert set(B.kernels()) == set(bridge.KERNELS)
    jl = (pathlib.Path(bridge.__file__).parent.parent / "julia" / "src" / "kernels.jl").read_text()
    for name in bridge.KERNELS:
        assert f"kernel_{name if name not in ('magnitude_prune', 'quantize_weight', 'dequantize_weight') else {'magnitude_prune': 'magnitude_masks', 'quantize_weight': 'quantize_array', 'dequantize_weight': 'dequantize_array'}[name]}(" in jl, name


def test_julia_backend_without_julia_fails_cleanly(clean_env, monkeypatch):
    """Forcing the julia backend where Julia is absent: a RuntimeError saying so, never an import of juliacall."""
    monkeypatch.setattr(B, "_active", "julia")
    from pyflux_compress.backends import julia as bridge

    monkeypatch.setattr(bridge, "_JL", None)
    with pytest.raises(RuntimeError, match="Install Julia"):
        pfc.prune(pfc.parse("Chain(Dense(4 => 3))", seed=0), 0.5)
    assert "juliacall" not in sys.modules


def test_backend_function_survives_submodule_imports():
    """pfc.backend is a function; importing the seam's package (as every compression module does) must not
    replace it with a module object (it once did when the seam lived in a submodule named ``backend``)."""
    import pyflux_compress.backends  # noqa: F401
    import pyflux_compress.compression.prune  # noqa: F401

    assert callable(pfc.backend) and not isinstance(pfc.backend, type(importlib))
    assert pfc.backend() in ("numpy", "julia")
