"""The compression report: what compression bought, in the measures of the survey's section 8.

``pfc.report(original, compressed, X, y)`` measures both models the same way and returns a :class:`Report`:

* **size** — parameters, nonzero parameters, sparsity, and bytes in every storage form: fp32 dense,
  sparse (CSR), int8, the compressed archive (``pfc.save_compressed``) and the ``.onnx`` file on disk;
* **compression ratio** — original fp32 dense bytes divided by the compressed model's bytes in each form
  (the headline ratio uses the smallest form, and says which one);
* **accuracy** and its drop, in percentage points, on ``(X, y)``;
* **inference speed** — onnxruntime p50 latency at batch 1 and 256 and throughput (samples/s), measured
  on the exported ``.onnx`` files through :class:`pfc.Predictor`;
* **memory** — the peak resident memory of this Python session (``resource.getrusage``), which bounds
  what the measurement itself needed.

The report prints as a ``rich`` table when ``rich`` is importable (it is not a dependency of the
package) and as a plain aligned table otherwise, and serialises to JSON and Markdown.
"""
from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Sequence, TextIO

import numpy as np

from .._files import jsonable, write_atomic
from ..model.walk import modules

__all__ = ["ModelMetrics", "Report", "report", "storage_bytes", "count_weights", "render_table",
           "peak_memory_mb", "prepare_input", "plain_table", "p50_and_throughput"]

STORAGE_FORMS = ("fp32", "sparse", "int8", "archive", "onnx")
_FORM_LABELS = {"fp32": "fp32 dense", "sparse": "sparse (CSR)", "int8": "int8",
                "archive": "archive (.pfcz)", "onnx": ".onnx on disk"}


# --------------------------------------------------------------------------------------------- helpers
def peak_memory_mb() -> float | None:
    """Peak resident set size of this process in MiB, or None where ``resource`` does not exist."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def count_weights(model: Any) -> tuple[int, int]:
    """``(parameters, nonzero parameters)`` of the model's *float equivalent*, biases included.

    Compressed leaves count as the float layer they stand for (``as_float_layer``): a weight-shared layer counts
    its full weight matrix, not its few centroids; a quantized layer counts the zeros of its dequantized weight
    (weights that round to 0 are zero in what is deployed).
    """
    from ..compression.quantize import as_float_layer

    total = nonzero = 0
    for _, layer in modules(model):
        flt = as_float_layer(layer)
        params = flt.params() if hasattr(flt, "params") else {}
        dequantized = getattr(layer, "weight_dequantized", None)
        for name, arr in params.items():
            arr = np.asarray(arr)
            total += arr.size
            if name == "weight" and callable(dequantized):
                arr = dequantized()
            nonzero += int(np.count_nonzero(arr))
    return total, nonzero


def _first_weight_layer(model: Any) -> Any:
    for _, layer in modules(model):
        layer = getattr(layer, "float_layer", layer)  # quantized wrappers: their float layer
        if getattr(layer, "compressible", ()):
            return layer
    return None


def prepare_input(model: Any, X: np.ndarray) -> np.ndarray:
    """Flatten image batches ``(N, C, H, W)`` to ``(N, C*H*W)`` when the model's first weight layer takes
    feature vectors (a 2-D weight, like Dense; Flux's flatten order equals C-order reshape of our NCHW arrays);
    otherwise return X unchanged."""
    X = np.asarray(X)
    first = _first_weight_layer(model)
    if first is not None and np.ndim(getattr(first, "weight", None)) == 2 and X.ndim > 2:
        return X.reshape(len(X), -1)
    return X


def storage_bytes(model: Any) -> dict[str, int]:
    """Bytes of ``model`` per storage form: ``fp32`` (dense float32), ``sparse`` (CSR), ``int8``, ``archive``.

    The formats are owned by :func:`pfc.size_report` (compression/archive.py); this renames its keys. The
    archive figure is the exact ``save_compressed`` size, computed by encoding once without writing a file.
    """
    from ..compression.archive import size_report

    sizes = size_report(model)
    return {"fp32": int(sizes["fp32_dense"]), "sparse": int(sizes["sparse_csr"]), "int8": int(sizes["int8"]),
            "archive": int(sizes["archive"])}


# --------------------------------------------------------------------------------------------- metrics
@dataclass
class ModelMetrics:
    """Every measure of one model. Bytes are integers; latency in milliseconds; throughput in samples/s."""

    name: str
    architecture: str
    params: int
    nonzeros: int
    bytes: dict[str, int | None]
    accuracy: float | None
    latency_p50_ms: dict[int, float] = field(default_factory=dict)
    throughput: dict[int, float] = field(default_factory=dict)
    onnx_path: str | None = None
    quantized: bool = False

    @property
    def sparsity(self) -> float:
        """Fraction of parameters that are exactly zero."""
        return 1.0 - self.nonzeros / self.params if self.params else 0.0

    def smallest_form(self) -> tuple[str, int]:
        """``(form, bytes)`` of the smallest storage form that holds this model's weights exactly.

        The .onnx file is excluded (it also holds a graph), and so is int8 for a float model (size_report's
        int8 figure is what the model *would* take once quantized, not a lossless form of it)."""
        forms = [(k, v) for k, v in self.bytes.items()
                 if v is not None and k != "onnx" and (k != "int8" or self.quantized)]
        return min(forms, key=lambda kv: kv[1])

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["sparsity"] = self.sparsity
        d["latency_p50_ms"] = {str(k): v for k, v in self.latency_p50_ms.items()}
        d["throughput"] = {str(k): v for k, v in self.throughput.items()}
        return d


def _measure(model: Any, name: str, X: np.ndarray, y: np.ndarray, *, workdir: str, onnx: bool,
             latency: bool, batch_sizes: Sequence[int], seconds: float, threads: int | None,
             notes: list[str]) -> ModelMetrics:
    from ..train.fit import accuracy as _accuracy

    params, nonzeros = count_weights(model)
    sizes: dict[str, int | None] = {**storage_bytes(model), "onnx": None}
    Xm = prepare_input(model, X)
    acc = float(_accuracy(model, Xm, y))
    metrics = ModelMetrics(name=name, architecture=str(model), params=params, nonzeros=nonzeros,
                           bytes=sizes, accuracy=acc, quantized=callable(getattr(model, "dequantize", None)))
    if onnx:
        path = os.path.join(workdir, f"{name}.onnx")
        from ..io.onnx import export_onnx

        try:
            export_onnx(model, path)
        except ValueError as err:  # e.g. a layer with no ONNX mapping: report the rest, say why this is missing
            notes.append(f"{name}: no ONNX measurements: {' '.join(str(err).split())}")
            return metrics
        metrics.onnx_path = path
        sizes["onnx"] = os.path.getsize(path)
        if latency:
            from .predictor import Predictor

            # the per-sample shape fills symbolic dims (H, W of a Conv model)
            stats = Predictor(path, threads=threads).benchmark(batch_sizes=tuple(batch_sizes), seconds=seconds,
                                                               input_shape=Xm.shape[1:])
            for bs in batch_sizes:
                p50, thr = p50_and_throughput(stats, bs)
                metrics.latency_p50_ms[bs] = p50
                metrics.throughput[bs] = thr
    return metrics


def p50_and_throughput(stats: Any, batch: int) -> tuple[float, float]:
    """``(p50 ms, samples/s)`` for one batch size of a :class:`Predictor.benchmark` result."""
    row = stats[batch]
    return float(row.p50_ms), float(row.throughput)


# ---------------------------------------------------------------------------------------------- report
@dataclass
class Report:
    """Section-8 metrics of an original and a compressed model, measured in one session.

    Attributes
    ----------
    original, compressed : ModelMetrics
    peak_memory_mb : float | None
        Peak resident memory of the Python session that measured (MiB).
    records : list[dict]
        What compression did (``compressed.records``: method, settings, per-layer sparsity).
    notes : list[str]
        Anything that could not be measured, and why.
    """

    original: ModelMetrics
    compressed: ModelMetrics
    peak_memory_mb: float | None
    records: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    # ---- derived measures
    @property
    def accuracy_drop(self) -> float | None:
        """Accuracy drop in percentage points (positive = the compressed model is worse)."""
        a, b = self.original.accuracy, self.compressed.accuracy
        return None if a is None or b is None else 100.0 * (a - b)

    def ratio(self, form: str) -> float | None:
        """Original fp32 dense bytes / compressed bytes in ``form`` (``.onnx``: original .onnx / compressed .onnx)."""
        base = self.original.bytes.get("onnx" if form == "onnx" else "fp32")
        value = self.compressed.bytes.get(form)
        if not base or not value:
            return None
        return base / value

    @property
    def compression_ratio(self) -> float:
        """Original fp32 dense bytes over the compressed model's smallest storage form."""
        return self.original.bytes["fp32"] / self.compressed.smallest_form()[1]

    # ---- rendering
    def rows(self) -> list[tuple[str, str, str, str]]:
        """The table: ``(metric, original, compressed, change)`` as display strings."""
        o, c = self.original, self.compressed
        rows = [("parameters", _fmt(o.params, ","), _fmt(c.params, ","), _times(o.params, c.params)),
                ("nonzero parameters", _fmt(o.nonzeros, ","), _fmt(c.nonzeros, ","), _times(o.nonzeros, c.nonzeros)),
                ("sparsity", _fmt(o.sparsity, ".2%"), _fmt(c.sparsity, ".2%"), "")]
        for form in STORAGE_FORMS:
            ob, cb = o.bytes.get(form), c.bytes.get(form)
            change = ""
            r = self.ratio(form)
            if form == "int8" and not c.quantized:
                change = "(if quantized)"
            elif r is not None:
                change = "same" if r == 1 else (f"{r:.2f}x smaller" if r > 1 else f"{1 / r:.2f}x larger") + \
                    (" (vs fp32)" if form != "onnx" else "")
            rows.append((f"bytes, {_FORM_LABELS[form]}", _bytes(ob), _bytes(cb), change))
        drop = self.accuracy_drop
        rows.append(("accuracy", _fmt(o.accuracy, ".2%"), _fmt(c.accuracy, ".2%"),
                     "" if drop is None else f"{-drop:+.2f} points"))
        for bs in sorted(set(o.latency_p50_ms) | set(c.latency_p50_ms)):
            ol, cl = o.latency_p50_ms.get(bs), c.latency_p50_ms.get(bs)
            rows.append((f"p50 latency, batch {bs} (ms)", _fmt(ol, ",.3f"), _fmt(cl, ",.3f"), _speed(ol, cl)))
            ot, ct = o.throughput.get(bs), c.throughput.get(bs)
            rows.append((f"throughput, batch {bs} (samples/s)", _fmt(ot, ",.0f"), _fmt(ct, ",.0f"),
                         f"{ct / ot:.2f}x" if ot and ct else ""))
        form, _ = c.smallest_form()
        rows.append(("compression ratio", "1.00x", f"{self.compression_ratio:.2f}x", f"fp32 -> {_FORM_LABELS[form]}"))
        rows.append(("peak memory of this session", "", _fmt(self.peak_memory_mb, ",.1f") + " MiB"
                     if self.peak_memory_mb is not None else "n/a", "ru_maxrss"))
        return rows

    def to_dict(self) -> dict[str, Any]:
        form, _ = self.compressed.smallest_form()
        return {
            "original": self.original.to_dict(),
            "compressed": self.compressed.to_dict(),
            "compression_ratio": self.compression_ratio,
            "compression_ratio_form": form,
            "ratios": {f: self.ratio(f) for f in STORAGE_FORMS},
            "accuracy_drop_points": self.accuracy_drop,
            "peak_memory_mb": self.peak_memory_mb,
            "records": jsonable(self.records),
            "notes": list(self.notes),
        }

    def to_json(self, path: str | os.PathLike | None = None, indent: int = 2) -> str:
        """The report as JSON; also written atomically to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=indent, allow_nan=False, default=lambda o: jsonable(o, max_array=64))
        if path is not None:
            write_atomic(path, text + "\n")
        return text

    def to_markdown(self, path: str | os.PathLike | None = None) -> str:
        """The report as a Markdown table (plus the compression records and notes)."""
        headers = ("metric", self.original.name, self.compressed.name, "change")
        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(["---"] + ["---:"] * 3) + "|"]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in self.rows()]
        lines += ["", f"- original: `{self.original.architecture}`",
                  f"- compressed: `{self.compressed.architecture}`"]
        for rec in self.records:
            lines.append(f"- compression step: {rec.get('method', '?')} {json.dumps(jsonable(rec.get('settings', {})))}")
        lines += [f"- note: {n}" for n in self.notes]
        text = "\n".join(lines) + "\n"
        if path is not None:
            write_atomic(path, text)
        return text

    def to_text(self) -> str:
        """A plain aligned table (what is printed when rich is not installed)."""
        return plain_table(("metric", self.original.name, self.compressed.name, "change"), self.rows())

    def print(self, file: TextIO | None = None) -> None:
        """Print the table (rich when importable, plain otherwise) and any notes."""
        render_table(("metric", self.original.name, self.compressed.name, "change"), self.rows(),
                     title="Compression report (survey section 8)", file=file)
        out = file or sys.stdout
        for note in self.notes:
            print(f"note: {note}", file=out)

    def __str__(self) -> str:
        return self.to_text()


def report(original: Any, compressed: Any, X: np.ndarray, y: np.ndarray, *, names: tuple[str, str] = (
           "original", "compressed"), onnx: bool = True, latency: bool = True,
           batch_sizes: Sequence[int] = (1, 256), seconds: float = 1.0, threads: int | None = None,
           workdir: str | os.PathLike | None = None) -> Report:
    """Measure ``original`` and ``compressed`` on the same data and return a :class:`Report`.

    Parameters
    ----------
    original, compressed : Chain
        Any models the package handles (a QuantizedChain included). Neither is modified.
    X : ndarray, shape (N, features) or (N, C, H, W)
        Evaluation inputs; image batches are flattened for Dense-first models.
    y : ndarray of int, shape (N,)
        Labels for accuracy.
    names : (str, str)
        Column titles.
    onnx : bool
        Export both models to ONNX to measure file size (and latency). False skips both.
    latency : bool
        Measure onnxruntime latency/throughput (needs ``onnx=True``).
    batch_sizes : sequence of int
        Batch sizes for the latency measurement (the survey's speed measure: 1 and 256).
    seconds : float
        Time budget per batch size per model for the latency measurement.
    threads : int or None
        onnxruntime intra-op threads (None: onnxruntime's default).
    workdir : path or None
        Where the .onnx files are written (kept); default a temporary directory that is removed.

    Returns
    -------
    Report
    """
    X = np.asarray(X)
    y = np.asarray(y)
    if X.ndim < 2:
        raise ValueError(f"report: X must be a batch (N, features...) array, got shape {X.shape}")
    if y.ndim != 1 or len(y) != len(X):
        raise ValueError(f"report: y must have shape ({len(X)},) to match X, got {y.shape}")
    if len(X) == 0:
        raise ValueError("report: X is empty")
    if not isinstance(names, (tuple, list)) or len(names) != 2 or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"report: names must be two non-empty strings, got {names!r}")
    if names[0] == names[1]:
        raise ValueError(f"report: names must differ, got {names!r}")
    batch_sizes = tuple(int(b) for b in batch_sizes)
    if not batch_sizes or any(b < 1 for b in batch_sizes):
        raise ValueError(f"report: batch_sizes must be positive integers, got {batch_sizes!r}")
    if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"report: seconds must be a positive number, got {seconds!r}")

    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="pfc-report-") as tmp:
        wd = os.fspath(workdir) if workdir is not None else tmp
        os.makedirs(wd, exist_ok=True)
        kw = dict(workdir=wd, onnx=onnx, latency=latency and onnx, batch_sizes=batch_sizes, seconds=seconds,
                  threads=threads, notes=notes)
        m_orig = _measure(original, names[0], X, y, **kw)
        m_comp = _measure(compressed, names[1], X, y, **kw)
        if workdir is None:  # the files are about to disappear
            m_orig.onnx_path = m_comp.onnx_path = None
    if not onnx:
        notes.append("ONNX export skipped: no .onnx size or latency")
    elif not latency:
        notes.append("latency not measured")
    return Report(original=m_orig, compressed=m_comp, peak_memory_mb=peak_memory_mb(),
                  records=list(getattr(compressed, "records", []) or []), notes=notes)


# ----------------------------------------------------------------------------------------- formatting
def _fmt(v: float | None, spec: str) -> str:
    """``v`` formatted by ``spec`` (``","`` counts, ``".2%"`` fractions as percent, ``",.3f"``), or n/a."""
    return "n/a" if v is None else format(v, spec)


def _bytes(v: int | None) -> str:
    if v is None:
        return "n/a"
    return f"{v:,} B" if v < 1024 else f"{v:,} B ({v / 1024:,.1f} KiB)"


def _speed(old: float | None, new: float | None) -> str:
    if not old or not new:
        return ""
    return f"{old / new:.2f}x faster" if new <= old else f"{new / old:.2f}x slower"


def _times(a: int, b: int) -> str:
    return f"{a / b:.2f}x fewer" if b and a != b else ""


def plain_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    rows = [tuple(str(c) for c in r) for r in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in rows)) if rows else len(str(h)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        # first column left-aligned (labels), the others right-aligned (numbers)
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), sep, *(line(r) for r in rows)])


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, title: str | None = None,
                 file: TextIO | None = None) -> None:
    """Print a table with ``rich`` when it is importable (never truncating a cell), else plain aligned text."""
    out = file or sys.stdout
    plain = plain_table(headers, rows)
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        if title:
            print(title, file=out)
        print(plain, file=out)
        return
    table = Table(title=title, title_justify="left")
    for i, h in enumerate(headers):
        table.add_column(str(h), justify="left" if i == 0 else "right", no_wrap=True)
    for r in rows:
        table.add_row(*(str(c) for c in r))
    needed = max(len(line) for line in plain.splitlines()) + 4 * len(headers) + 4
    console = Console(file=out, highlight=False)
    console.width = max(console.width, needed)  # a pipe defaults to 80 columns: never ellipsise numbers
    console.print(table)
