"""CLI rough edges of issue 15: unknown output extensions, --energy validated like the API, warnings on one line
without source paths, messages that name flags (not Python arguments), and the demo's cache announcement."""
from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest

import pyflux_compress as pfc
from pyflux_compress import cli
from pyflux_compress.model import layers as L
from pyflux_compress.model.chain import Chain


def run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "m.jld2"
    pfc.save(str(path), pfc.parse("Chain(Dense(16 => 12, relu), Dense(12 => 4))", seed=0))
    return path


@pytest.mark.parametrize("name", ["model.jdl2", "x.txt", "noextension"])
@pytest.mark.parametrize("cmd", [["prune", "--dataset", "none"], ["sparsify", "--dataset", "none"],
                                 ["quantize", "--dataset", "none", "--calibrate", "0"],
                                 ["lowrank", "--dataset", "none"]])
def test_unknown_output_extension_is_refused_listing_the_accepted(model_file, tmp_path, capsys, cmd, name):
    out = tmp_path / name
    code, stdout, err = run([cmd[0], model_file, "-o", out, *cmd[1:]], capsys)
    assert code == 2
    line = err.strip()
    assert "\n" not in line
    assert f"unknown extension" in line and str(out) in line
    assert ".jld2 (Flux checkpoint), .onnx (ONNX model), .pfcz (compressed archive)" in line
    assert not out.exists() and stdout == ""  # refused before any work


def test_train_and_export_refuse_unknown_extensions(model_file, tmp_path, capsys):
    code, _, err = run(["train", "article", "-o", tmp_path / "m.h5", "--dataset", "digits"], capsys)
    assert code == 2 and "unknown extension '.h5'" in err
    code, _, err = run(["export", model_file, "-o", tmp_path / "m.pfcz"], capsys)
    assert code == 2 and "unknown extension '.pfcz'; accepted: .onnx (ONNX model)" in err


@pytest.mark.parametrize("ext", [".jld2", ".onnx", ".pfcz"])
def test_accepted_extensions_still_write(model_file, tmp_path, capsys, ext):
    out = tmp_path / f"p{ext}"
    code, stdout, err = run(["prune", model_file, "-o", out, "--dataset", "none", "--sparsity", "0.5"], capsys)
    assert code == 0, err
    assert out.is_file() and f"wrote {out}" in stdout


def test_lowrank_energy_validated_like_the_api(model_file, tmp_path, capsys):
    for bad in ("0", "-0.5", "1.5", "nan"):
        code, _, err = run(["lowrank", model_file, "-o", tmp_path / "l.jld2", "--dataset", "none",
                            "--energy", bad], capsys)
        assert code == 2 and "--energy" in err and "(0, 1]" in err, (bad, err)
        with pytest.raises(ValueError, match="energy"):  # the API refuses the same values
            pfc.lowrank(pfc.load(str(model_file)), energy=float(bad))
    # 1 is accepted by both: every singular value kept, so the model computes the same function
    code, out, err = run(["lowrank", model_file, "-o", tmp_path / "l.jld2", "--dataset", "none", "--energy", "1"],
                         capsys)
    assert code == 0, err
    x = np.random.default_rng(0).standard_normal((5, 16)).astype(np.float32)
    np.testing.assert_allclose(pfc.load(str(tmp_path / "l.jld2"))(x), pfc.lowrank(pfc.load(str(model_file)),
                               energy=1.0)(x), rtol=1e-5, atol=1e-6)
    # --energy 0.3 differs from the default 0.95 (the old code silently used 0.95 for 0)
    code, out_low, _ = run(["lowrank", model_file, "-o", tmp_path / "l3.jld2", "--dataset", "none",
                            "--energy", "0.3"], capsys)
    assert code == 0
    assert str(pfc.load(str(tmp_path / "l3.jld2"))) == str(pfc.lowrank(pfc.load(str(model_file)), energy=0.3))


def test_warnings_print_as_one_line_without_source_paths(model_file, monkeypatch, capsys):
    def noisy(args):
        warnings.warn("first line\nsecond line", UserWarning)
        return 0

    monkeypatch.setattr(cli, "cmd_inspect", noisy)
    code, _, err = run(["inspect", model_file], capsys)
    assert code == 0
    assert err == "pyflux-compress inspect: warning: first line second line\n"
    assert warnings.showwarning is not None and warnings.showwarning.__name__ != "show"  # restored


def test_warning_from_a_real_command_in_a_subprocess(tmp_path):
    """What the user sees from the entry point: a warning raised inside the package is one line, no path."""
    script = ("import warnings, sys; from pyflux_compress import cli; "
              "cli.cmd_inspect = lambda a: (warnings.warn('careful: x'), 0)[1]; "
              f"sys.exit(cli.main(['inspect', {str(tmp_path)!r}]))")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0
    assert r.stderr == "pyflux-compress inspect: warning: careful: x\n"
    assert ".py" not in r.stderr


@pytest.fixture
def cnn_onnx(tmp_path):
    model = Chain(L.Conv((3, 3), (1, 4), seed=0), L.GlobalMeanPool(), L.flatten, L.Dense(4, 2, seed=1))
    path = tmp_path / "cnn.onnx"
    pfc.export_onnx(model, path)  # spatial dims symbolic: (1, H, W)
    pool_first = Chain(L.MaxPool((2, 2)), L.flatten, L.Dense(4, 2, seed=1))
    pool_path = tmp_path / "pool.pfcz"
    pfc.save_compressed(pool_path, pool_first)
    return path, pool_path


def test_bench_names_the_input_shape_flag(cnn_onnx, capsys):
    path, pool_path = cnn_onnx
    code, _, err = run(["bench", path, "--seconds", "0.01", "--batch-sizes", "1"], capsys)
    assert code == 2 and "--input-shape" in err and "input_shape=" not in err
    code, _, err = run(["bench", path, "--seconds", "0.01", "--batch-sizes", "1", "--input-shape", "3,8,8"], capsys)
    assert code == 2 and "--input-shape 3,8,8 does not fit" in err and "input_shape" not in err.replace("--input-shape", "")
    code, _, err = run(["bench", pool_path, "--seconds", "0.01", "--batch-sizes", "1"], capsys)
    assert code == 2 and "--input-shape" in err and "input_shape=" not in err
    code, out, err = run(["bench", path, "--seconds", "0.01", "--batch-sizes", "1,2", "--input-shape", "1,8,8",
                          "--json"], capsys)
    assert code == 0, err
    code, out, err = run(["bench", pool_path, "--seconds", "0.01", "--batch-sizes", "1", "--input-shape", "1,4,4"],
                         capsys)
    assert code == 0, err


def test_demo_help_says_where_the_cache_is(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    code, out, _ = run(["demo", "--help"], capsys)
    assert code == 0
    assert str(tmp_path / "xdg" / "pyflux-compress") in "".join(out.split())  # help text wraps at hyphens
