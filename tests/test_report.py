"""pfc.report (section-8 metrics) and the sweep: values checked against independent measurements.

Small and fast: a digits-sized MLP (64 inputs) trained for a few epochs; latency measured for a few ms.
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

import pyflux_compress as pfc
from pyflux_compress.deploy.report import Report, plain_table, render_table, report
from pyflux_compress.deploy.sweep import SweepResult, sweep


@pytest.fixture(scope="module")
def digits():
    try:
        Xtr, ytr, Xte, yte = pfc.datasets.load("digits")
    except FileNotFoundError as err:  # pragma: no cover - scikit-learn is a test dependency
        pytest.skip(str(err))
    return Xtr.reshape(len(Xtr), -1), ytr, Xte.reshape(len(Xte), -1), yte


@pytest.fixture(scope="module")
def small_pair(digits):
    """(trained float model, pruned 80% + int8 quantized copy)."""
    Xtr, ytr, _, _ = digits
    model = pfc.parse("Chain(Dense(64 => 32, relu), Dense(32 => 10))", seed=0)
    pfc.fit(model, Xtr, ytr, epochs=8, batchsize=32, opt=pfc.Adam(3e-3), progress=False, seed=0)
    compressed = pfc.quantize(pfc.prune(model, 0.8, scope="global"), bits=8, granularity="per_channel",
                              calibration=Xtr[:128])
    return model, compressed


@pytest.fixture(scope="module")
def rep(small_pair, digits, tmp_path_factory):
    model, compressed = small_pair
    _, _, Xte, yte = digits
    workdir = tmp_path_factory.mktemp("report")
    r = report(model, compressed, Xte, yte, batch_sizes=(1, 16), seconds=0.05, workdir=workdir)
    return r, workdir


def test_report_sizes_and_counts_match_independent_measurements(rep, small_pair):
    r, workdir = rep
    model, compressed = small_pair
    n = sum(a.size for _, layer in model.walk() for a in layer.params().values())
    assert r.original.params == r.compressed.params == n == 64 * 32 + 32 + 32 * 10 + 10
    assert r.original.nonzeros == sum(np.count_nonzero(a) for _, layer in model.walk()
                                      for a in layer.params().values())
    # pruned 80% of the weights (biases untouched); int8 rounding can only add zeros
    n_weights = 64 * 32 + 32 * 10
    assert r.compressed.nonzeros <= n - round(0.8 * n_weights)
    assert r.original.bytes["fp32"] == 4 * n
    # .onnx sizes are the files on disk
    assert r.original.bytes["onnx"] == os.path.getsize(workdir / "original.onnx")
    assert r.compressed.bytes["onnx"] == os.path.getsize(workdir / "compressed.onnx")
    # the archive entry is what save_compressed really writes
    path = workdir / "c.pfcz"
    pfc.save_compressed(str(path), compressed)
    assert r.compressed.bytes["archive"] == os.path.getsize(path)
    assert r.compressed.bytes["archive"] < r.original.bytes["archive"]


def test_report_ratio_accuracy_latency_memory(rep, small_pair, digits):
    r, _ = rep
    model, compressed = small_pair
    _, _, Xte, yte = digits
    assert r.original.accuracy == pytest.approx(pfc.accuracy(model, Xte, yte))
    assert r.compressed.accuracy == pytest.approx(pfc.accuracy(compressed, Xte, yte))
    assert r.accuracy_drop == pytest.approx(100 * (r.original.accuracy - r.compressed.accuracy))
    smallest = min(v for k, v in r.compressed.bytes.items() if k != "onnx")
    assert r.compression_ratio == pytest.approx(r.original.bytes["fp32"] / smallest)
    assert r.compression_ratio > 2  # 80% pruned and int8 (a tiny model: archive metadata weighs in)
    for m in (r.original, r.compressed):
        assert set(m.latency_p50_ms) == {1, 16}
        assert all(v > 0 for v in m.latency_p50_ms.values())
        # throughput cannot exceed batch / p50 by orders of magnitude (it is a mean over the same calls)
        assert 0 < m.throughput[16] < 100 * 16 / (m.latency_p50_ms[16] / 1e3)
    assert r.peak_memory_mb is not None and 10 < r.peak_memory_mb < 100_000
    assert r.records and r.records[-1]["method"] == "quantize"


def test_report_json_round_trip(rep, tmp_path):
    r, _ = rep
    path = tmp_path / "r.json"
    text = r.to_json(path)
    data = json.loads(path.read_text())
    assert data == json.loads(text)
    assert data["original"]["params"] == r.original.params
    assert data["compressed"]["nonzeros"] == r.compressed.nonzeros
    assert data["compressed"]["bytes"] == r.compressed.bytes
    assert data["compression_ratio"] == pytest.approx(r.compression_ratio)
    assert data["accuracy_drop_points"] == pytest.approx(r.accuracy_drop)
    assert data["compressed"]["latency_p50_ms"]["16"] == pytest.approx(r.compressed.latency_p50_ms[16])
    assert data["peak_memory_mb"] == pytest.approx(r.peak_memory_mb)
    assert data["ratios"]["archive"] == pytest.approx(r.original.bytes["fp32"] / r.compressed.bytes["archive"])


def test_report_markdown_has_every_metric(rep, tmp_path):
    r, _ = rep
    md = r.to_markdown(tmp_path / "r.md")
    assert (tmp_path / "r.md").read_text() == md
    lines = md.splitlines()
    assert lines[0] == "| metric | original | compressed | change |"
    for label in ("parameters", "nonzero parameters", "sparsity", "bytes, fp32 dense", "bytes, sparse (CSR)",
                  "bytes, int8", "bytes, archive (.pfcz)", "bytes, .onnx on disk", "accuracy",
                  "p50 latency, batch 1 (ms)", "p50 latency, batch 16 (ms)", "throughput, batch 16 (samples/s)",
                  "compression ratio", "peak memory of this session"):
        assert any(line.startswith(f"| {label} |") for line in lines), label
    row = next(line for line in lines if line.startswith("| nonzero parameters |"))
    assert f"{r.compressed.nonzeros:,}" in row
    row = next(line for line in lines if line.startswith("| compression ratio |"))
    assert f"{r.compression_ratio:.2f}x" in row


def test_report_prints_rich_and_plain(rep, capsys, monkeypatch):
    r, _ = rep
    r.print()
    out = capsys.readouterr().out
    assert "compression ratio" in out and f"{r.compressed.nonzeros:,}" in out
    assert "…" not in out  # never truncated, even on a pipe
    monkeypatch.setitem(sys.modules, "rich", None)  # as if rich were not installed
    monkeypatch.setitem(sys.modules, "rich.console", None)
    monkeypatch.setitem(sys.modules, "rich.table", None)
    r.print()
    plain = capsys.readouterr().out
    assert plain.splitlines()[1:] == str(r).splitlines()
    assert "┃" not in plain


def test_report_without_onnx(small_pair, digits):
    model, compressed = small_pair
    _, _, Xte, yte = digits
    r = report(model, compressed, Xte[:50], yte[:50], onnx=False)
    assert r.original.bytes["onnx"] is None and not r.original.latency_p50_ms
    assert any("ONNX export skipped" in n for n in r.notes)
    assert "n/a" in r.to_text()


def test_ratio_of_a_float_model_ignores_the_hypothetical_int8_form(small_pair, digits):
    model, _ = small_pair
    _, _, Xte, yte = digits
    pruned = pfc.prune(model, 0.5, scope="global")
    r = report(model, pruned, Xte[:50], yte[:50], onnx=False)
    b = r.compressed.bytes
    assert not r.compressed.quantized and r.compressed.bytes["int8"] < min(b["fp32"], b["archive"])
    assert r.compression_ratio == pytest.approx(r.original.bytes["fp32"] / min(b["fp32"], b["sparse"], b["archive"]))
    assert any(row[0] == "bytes, int8" and row[3] == "(if quantized)" for row in r.rows())


@pytest.mark.parametrize("kwargs, match", [
    (dict(y=np.zeros(3, dtype=np.int64)), "y must have shape"),
    (dict(batch_sizes=(0,)), "batch_sizes"),
    (dict(seconds=-1.0), "seconds"),
    (dict(names=("a", "a")), "names"),
])
def test_report_validates_arguments(small_pair, digits, kwargs, match):
    model, compressed = small_pair
    _, _, Xte, yte = digits
    args = dict(X=Xte[:20], y=yte[:20])
    args.update(kwargs)
    X, y = args.pop("X"), args.pop("y")
    with pytest.raises(ValueError, match=match):
        report(model, compressed, X, y, onnx=False, **args)


def test_plain_table_aligns_columns():
    text = plain_table(("a", "bb"), [("x", "1"), ("longer", "12345")])
    lines = text.splitlines()
    assert len({len(line) for line in lines}) == 1  # every line padded to the same width
    assert lines[2].endswith("    1")


def test_render_table_falls_back_without_rich(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "rich.console", None)
    render_table(("h1", "h2"), [("a", "1")], title="T")
    assert capsys.readouterr().out == "T\n" + plain_table(("h1", "h2"), [("a", "1")]) + "\n"


# ----------------------------------------------------------------------------------------------- sweep
@pytest.fixture(scope="module")
def swept(small_pair, digits):
    model, _ = small_pair
    _, _, Xte, yte = digits
    return sweep(model, Xte, yte, sparsities=(0.0, 0.5, 0.9), bits=(None, 8), progress=False)


def test_sweep_points_are_measured(swept, small_pair, digits):
    model, _ = small_pair
    _, _, Xte, yte = digits
    assert [(p.target_sparsity, p.bits) for p in swept.points] == [
        (0.0, None), (0.0, 8), (0.5, None), (0.5, 8), (0.9, None), (0.9, 8)]
    assert swept.baseline_accuracy == pytest.approx(pfc.accuracy(model, Xte, yte))
    assert swept.points[0].accuracy == pytest.approx(swept.baseline_accuracy)
    by = {(p.target_sparsity, p.bits): p for p in swept.points}
    # more sparsity -> fewer nonzeros and a smaller archive; int8 -> smaller than fp32 at equal sparsity
    assert by[(0.9, None)].nonzeros < by[(0.5, None)].nonzeros < by[(0.0, None)].nonzeros
    assert by[(0.9, None)].size_bytes < by[(0.5, None)].size_bytes < by[(0.0, None)].size_bytes
    for s in (0.0, 0.5):  # (at 90% of this tiny model the archive's per-layer int8 metadata dominates)
        assert by[(s, 8)].size_bytes < by[(s, None)].size_bytes
    # the recorded accuracy is the model's: recompute one point independently
    again = pfc.accuracy(pfc.quantize(pfc.prune(model, 0.5, scope="global"), bits=8, granularity="per_channel"),
                         Xte, yte)
    assert by[(0.5, 8)].accuracy == pytest.approx(again)


def test_sweep_plot_is_a_valid_png(swept, tmp_path):
    import matplotlib.image

    path = tmp_path / "s.png"
    swept.plot(path)
    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 400
    assert img.std() > 0.01  # not a blank canvas


def test_sweep_json_round_trip(swept, tmp_path):
    swept.to_json(tmp_path / "s.json")
    data = json.loads((tmp_path / "s.json").read_text())
    assert len(data["points"]) == len(swept.points)
    assert data["points"][3]["size_bytes"] == swept.points[3].size_bytes
    base = data["points"][0]["fp32_bytes"]  # the unpruned fp32 point is the original model
    assert all(p["ratio"] == pytest.approx(base / p["size_bytes"]) for p in data["points"])
    assert SweepResult.HEADERS[-1] == "accuracy"


def test_sweep_plot_without_matplotlib(swept, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"pyflux-compress\[plot\]"):
        swept.plot(tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("kwargs, match", [
    (dict(sparsities=(1.0,)), "sparsities"),
    (dict(sparsities=()), "sparsities"),
    (dict(bits=(0,)), "bits"),
    (dict(method="nope"), "method"),
])
def test_sweep_validates_arguments(small_pair, digits, kwargs, match):
    model, _ = small_pair
    _, _, Xte, yte = digits
    with pytest.raises(ValueError, match=match):
        sweep(model, Xte, yte, progress=False, **kwargs)


def test_report_is_public():
    assert pfc.report is report
    assert isinstance(Report, type)
