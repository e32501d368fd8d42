"""The pyflux-compress command line: every subcommand runs, inspect reads every corpus file, bad input exits 2
with one line on stderr and no traceback, and the sweep's JSON matches its printed table.

Most tests call ``cli.main(argv)`` in-process (fast); a few run the real console entry point in a subprocess to
check what a user sees. Data: scikit-learn's digits (64 features) keeps everything small.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pyflux_compress as pfc
from pyflux_compress import cli

from _corpus import CORPUS
CORPUS_FILES = sorted(CORPUS.glob("*.jld2")) if CORPUS.is_dir() else []
SUBCOMMANDS = ("inspect", "train", "prune", "sparsify", "quantize", "distill", "lowrank", "export", "bench",
               "report", "sweep", "demo", "autocompress")
DIGITS = ["--dataset", "digits"]


def run(argv, capsys):
    """(exit code, stdout, stderr) of an in-process run."""
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def run_subprocess(*argv, cwd=None):
    return subprocess.run([sys.executable, "-m", "pyflux_compress.cli", *map(str, argv)], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def digits_ok():
    try:
        pfc.datasets.load("digits")
    except FileNotFoundError as err:  # pragma: no cover
        pytest.skip(str(err))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits_ok):
    """A small model trained through `pyflux-compress train` (digits)."""
    path = tmp_path_factory.mktemp("cli") / "m.jld2"
    code = cli.main(["train", "Chain(Dense(64 => 32, relu), Dense(32 => 10))", "-o", str(path), *DIGITS,
                     "--epochs", "6", "--lr", "3e-3", "-q"])
    assert code == 0
    return path


# ------------------------------------------------------------------------------------------------ help
@pytest.mark.parametrize("cmd", [None, *SUBCOMMANDS])
def test_help_everywhere(cmd, capsys):
    code, out, _ = run([cmd, "--help"] if cmd else ["--help"], capsys)
    assert code == 0
    assert out.startswith("usage: pyflux-compress")
    if cmd is None:
        for sub in SUBCOMMANDS:
            assert sub in out


def test_every_subcommand_is_registered():
    assert set(cli.SUBCOMMANDS) == set(SUBCOMMANDS)


def test_console_script_is_installed():
    from importlib.metadata import entry_points

    eps = [ep for ep in entry_points(group="console_scripts") if ep.name == "pyflux-compress"]
    assert eps and eps[0].value == "pyflux_compress.cli:main"


# ------------------------------------------------------------------------------------------------ inspect
@pytest.mark.skipif(not CORPUS_FILES, reason="corpus_jld2 not found")
@pytest.mark.parametrize("path", CORPUS_FILES, ids=lambda p: p.name[:40])
def test_inspect_every_corpus_file(path, capsys):
    code, out, err = run(["inspect", path], capsys)
    assert code == 0, err
    assert out.startswith(f"{path}: ")
    assert len(out.splitlines()) >= 2
    if out.splitlines()[0].endswith(": flux") or re.search(r"^\s*model_state: ", out, re.M):
        # a Flux model or Flux.state checkpoint: its weight arrays are listed with shapes and dtypes
        assert re.search(r"weight.*float32", out)


@pytest.mark.skipif(not CORPUS_FILES, reason="corpus_jld2 not found")
def test_inspect_json_on_flux_state_file(capsys):
    path = CORPUS / "PavelNikolaichev__JuliaHEPNet__model.jld2"
    code, out, _ = run(["inspect", path, "--json"], capsys)
    assert code == 0
    info = json.loads(out)
    # Chain(Dense(3, 64, σ), Dense(64, 1, σ)): 3*64 + 64 + 64 + 1 parameters
    total = info.get("total_params", info.get("elements"))
    assert total == 3 * 64 + 64 + 64 * 1 + 1


def test_inspect_model_files(trained, tmp_path, capsys):
    code, out, _ = run(["inspect", trained], capsys)
    assert code == 0
    assert "Chain(Dense(64 => 32, relu), Dense(32 => 10))" in out
    assert "layers[1].weight" in out and "32x64" in out and "float32" in out
    onnx_path = tmp_path / "m.onnx"
    assert run(["export", trained, "-o", onnx_path], capsys)[0] == 0
    code, out, _ = run(["inspect", onnx_path, "--json"], capsys)
    info = json.loads(out)
    assert info["kind"] == "onnx" and info["op_counts"]["Gemm"] == 2
    assert info["total_params"] == 64 * 32 + 32 + 32 * 10 + 10


# ---------------------------------------------------------------------------------------------- bad input
def _one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("argv, needle", [
    (["inspect", "/no/such/file.jld2"], "no such file"),
    (["inspect"], "required"),
    (["inspect", "x.jld2", "--bogus"], "unrecognized arguments"),
    (["frobnicate"], "invalid choice"),
    ([], "COMMAND is required"),
    (["prune", "/no/such.jld2", "-o", "x.jld2", "--sparsity", "1.5"], "--sparsity"),
    (["prune", "/no/such.jld2", "-o", "x.jld2", "--sparsity", "abc"], "--sparsity"),
    (["quantize", "/no/such.jld2", "-o", "x.pfcz", "--bits", "3"], "bits"),
    (["bench", "/no/such.onnx", "--batch-sizes", "1,0"], "positive integer"),
    (["train", "article", "-o", "/no/such/dir/m.jld2"], "output directory does not exist"),
    (["sweep", "/no/such.jld2", "--out", "o", "--sparsities", "0,2"], "[0, 1)"),
])
def test_bad_input_exits_2_with_one_line(argv, needle, capsys):
    code, _, err = run(argv, capsys)
    assert code == 2
    line = _one_line_error(err)
    assert line.startswith("pyflux-compress")
    assert needle in line


def test_unreadable_files_exit_2(tmp_path, capsys):
    bad = tmp_path / "garbage.jld2"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + os.urandom(200))
    code, _, err = run(["inspect", bad], capsys)
    assert code == 2 and str(bad) in _one_line_error(err)  # names the file
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"not a protobuf at all")
    code, _, err = run(["inspect", empty], capsys)
    assert code == 2
    _one_line_error(err)
    code, _, err = run(["inspect", tmp_path], capsys)  # a directory
    assert code == 2 and "directory" in _one_line_error(err)


def test_bad_flux_syntax_exits_2(tmp_path, capsys, digits_ok):
    code, _, err = run(["train", "Chain(Dense(64 => 10, nosuchact))", "-o", tmp_path / "m.jld2", *DIGITS], capsys)
    assert code == 2
    assert "nosuchact" in _one_line_error(err)


def test_internal_error_has_no_traceback_unless_debug(monkeypatch, capsys, tmp_path):
    def boom(args):
        raise RuntimeError("kaput\nsecond line")

    monkeypatch.setattr(cli, "cmd_inspect", boom)
    f = tmp_path / "x.jld2"
    f.write_bytes(b"")
    code, _, err = run(["inspect", f], capsys)
    assert code == 1
    line = _one_line_error(err)
    assert "internal error: RuntimeError: kaput second line" in line and "--debug" in line
    with pytest.raises(RuntimeError, match="kaput"):
        cli.main(["inspect", str(f), "--debug"])
    with pytest.raises(RuntimeError, match="kaput"):
        cli.main(["--debug", "inspect", str(f)])  # the flag works before the subcommand too


def test_subprocess_bad_path_and_flag(tmp_path):
    """What a user sees from the real entry point: exit 2, one line, no traceback."""
    r = run_subprocess("inspect", tmp_path / "missing.jld2")
    assert r.returncode == 2 and r.stdout == ""
    assert _one_line_error(r.stderr) == f"pyflux-compress inspect: error: no such file: {tmp_path / 'missing.jld2'}"
    r = run_subprocess("prune", "--no-such-flag")
    assert r.returncode == 2
    _one_line_error(r.stderr)


# --------------------------------------------------------------------------------------- model commands
def test_pipeline_prune_quantize_export_bench_report(trained, tmp_path, capsys):
    pruned, q, onnx_path = tmp_path / "p.jld2", tmp_path / "q.pfcz", tmp_path / "q.onnx"
    code, out, err = run(["prune", trained, "-o", pruned, "--sparsity", "0.7", "--epochs", "1", *DIGITS, "-q"],
                         capsys)
    assert code == 0, err
    assert "fine-tuned 1 epoch(s)" in out
    m = pfc.load(str(pruned))
    w = np.concatenate([m[0].weight.ravel(), m[1].weight.ravel()])
    assert abs(np.mean(w == 0) - 0.7) < 0.01  # global 70% of the weights, kept through fine-tuning

    code, out, err = run(["quantize", pruned, "-o", q, "--bits", "8", *DIGITS, "--calibrate", "64"], capsys)
    assert code == 0, err
    assert "int8" in out and q.stat().st_size < pruned.stat().st_size
    qm = pfc.load_compressed(str(q))
    assert all(np.asarray(l.qweight).dtype == np.int8 for _, l in qm.walk() if hasattr(l, "qweight"))

    code, out, err = run(["export", q, "-o", onnx_path], capsys)
    assert code == 0, err
    code, out, err = run(["bench", onnx_path, "--batch-sizes", "1,8", "--seconds", "0.05", "--json"], capsys)
    assert code == 0, err
    rows = json.loads(out)["results"]
    assert [r["batch_size"] for r in rows] == [1, 8] and all(r["p50_ms"] > 0 for r in rows)

    rj, rm = tmp_path / "r.json", tmp_path / "r.md"
    code, out, err = run(["report", trained, q, *DIGITS, "--seconds", "0.05", "--json", rj, "--markdown", rm],
                         capsys)
    assert code == 0, err
    data = json.loads(rj.read_text())
    assert data["compressed"]["nonzeros"] < data["original"]["nonzeros"]
    assert f"{data['compression_ratio']:.2f}x" in out  # printed table == JSON
    assert "| compression ratio |" in rm.read_text()


def test_prune_of_a_loaded_checkpoint_is_exact(trained, tmp_path, capsys):
    """The pruned weights are the input's largest weights, unchanged (JLD2-loaded arrays are Fortran-ordered)."""
    code, _, err = run(["prune", trained, "-o", tmp_path / "p.jld2", "--sparsity", "0.5", "--dataset", "none"],
                       capsys)
    assert code == 0, err
    before, after = pfc.load(str(trained)), pfc.load(str(tmp_path / "p.jld2"))
    for (_, a), (_, b) in zip(before.walk(), after.walk()):
        kept = b.weight != 0
        np.testing.assert_array_equal(b.weight[kept], a.weight[kept])
    w_all = np.concatenate([np.abs(a.weight).ravel() for _, a in before.walk()])
    kept_all = np.concatenate([(b.weight != 0).ravel() for _, b in after.walk()])
    assert w_all[~kept_all].max() <= w_all[kept_all].min()  # one global threshold


def test_quantize_to_jld2_says_dequantized(trained, tmp_path, capsys):
    code, out, err = run(["quantize", trained, "-o", tmp_path / "q.jld2", "--bits", "4", *DIGITS, "--calibrate",
                          "0"], capsys)
    assert code == 0, err
    assert "dequantized" in out
    m = pfc.load(str(tmp_path / "q.jld2"))
    assert len(np.unique(m[0].weight[0])) <= 16  # 4-bit: at most 16 levels per output channel


def test_sparsify_lowrank_distill(trained, tmp_path, capsys):
    code, out, err = run(["sparsify", trained, "-o", tmp_path / "s.pfcz", "--pattern", "2:4", *DIGITS], capsys)
    assert code == 0, err
    w = pfc.load_compressed(str(tmp_path / "s.pfcz"))[0].weight
    assert (w.reshape(w.shape[0], -1, 4) != 0).sum(axis=2).max() <= 2

    code, out, err = run(["lowrank", trained, "-o", tmp_path / "l.jld2", "--rank", "4", *DIGITS], capsys)
    assert code == 0, err
    assert "Dense(64 => 4; bias=false)" in out

    code, out, err = run(["distill", trained, "-o", tmp_path / "st.jld2", "--student",
                          "Chain(Dense(64 => 16, relu), Dense(16 => 10))", *DIGITS, "--epochs", "2", "-q"], capsys)
    assert code == 0, err
    assert str(pfc.load(str(tmp_path / "st.jld2"))) == "Chain(Dense(64 => 16, relu), Dense(16 => 10))"


# ----------------------------------------------------------------------------------------------- sweep
def test_sweep_png_and_json_match_printed_table(trained, tmp_path, capsys):
    import matplotlib.image

    out_dir = tmp_path / "sweep"
    code, out, err = run(["sweep", trained, "--out", out_dir, *DIGITS, "--sparsities", "0,0.5,0.9",
                          "--bits", "fp32,8", "-q"], capsys)
    assert code == 0, err
    img = matplotlib.image.imread(out_dir / "sweep.png")  # decodes: a valid PNG
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    points = json.loads((out_dir / "sweep.json").read_text())["points"]
    assert len(points) == 6
    # parse the printed table: rows start with the setting label "prune 0.50 + int8" etc.
    printed = {}
    for line in out.splitlines():
        cells = [c for c in re.split(r"[│┃|]|\s{2,}", line) if c.strip()]
        cells = [c.strip() for c in cells]
        if cells and cells[0].startswith("prune "):
            printed[cells[0]] = cells
    assert len(printed) == 6
    for p in points:
        cells = printed[p["label"]]
        assert cells[3] == str(p["params"]) and cells[4] == str(p["nonzeros"])
        assert cells[6] == str(p["size_bytes"]) and float(cells[7]) == pytest.approx(p["ratio"], abs=5e-3)
        assert float(cells[8]) == pytest.approx(p["accuracy"], abs=5e-5)


# ------------------------------------------------------------------------------------------------ demo
def test_demo_runs_end_to_end(tmp_path, monkeypatch, capsys, digits_ok):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # never touch the user's cache
    out_dir = tmp_path / "demo"
    argv = ["demo", *DIGITS, "--epochs", "3", "--out", out_dir, "--seconds", "0.05", "-q"]
    code, out, err = run(argv, capsys)
    assert code == 0, err
    for name in ("model.jld2", "pruned.jld2", "compressed.pfcz", "original.onnx", "compressed.onnx",
                 "report.json", "report.md"):
        assert (out_dir / name).is_file(), name
    data = json.loads((out_dir / "report.json").read_text())
    assert data["compressed"]["sparsity"] > 0.85  # 90% of the weights pruned (biases are not)
    assert data["compression_ratio"] > 3
    assert "compression ratio" in out
    cache = tmp_path / "cache" / "pyflux-compress"
    assert f"cached the trained model in {cache}" in out and f"rm -r {cache} clears the cache" in out
    # second run loads the cached trained model instead of training
    code, out, _ = run(argv, capsys)
    assert code == 0 and "loaded cached trained model" in out
