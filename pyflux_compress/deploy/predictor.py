"""``Predictor``: run a model with onnxruntime -- the article's ``predict(model, x)`` deployment step.

::

    pred = pfc.Predictor("model.onnx")          # or "model.jld2", or a Chain / QuantizedChain
    y = pred.predict(x)                         # numpy in, numpy out, batch-first; a single 1-D sample works
    print(pred.benchmark(batch_sizes=(1, 64, 256), seconds=2.0))
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

__all__ = ["Predictor", "BenchmarkResult"]


@dataclass(frozen=True)
class BenchmarkRow:
    """Latency of one batch size: milliseconds per call; throughput in samples per second
    (``batch_size / mean latency``, so stalls from a busy machine count against it)."""

    batch_size: int
    p50_ms: float
    p95_ms: float
    mean_ms: float
    throughput: float
    calls: int


class BenchmarkResult:
    """Rows of :class:`BenchmarkRow` by batch size; ``result[64]`` gives one row; ``repr`` is a table."""

    def __init__(self, rows: Sequence[BenchmarkRow], threads: int | None, source: str):
        self.rows = list(rows)
        self.threads = threads
        self.source = source

    def __getitem__(self, batch_size: int) -> BenchmarkRow:
        for row in self.rows:
            if row.batch_size == batch_size:
                return row
        raise KeyError(f"batch size {batch_size} was not benchmarked; have {[r.batch_size for r in self.rows]}")

    def as_dict(self) -> dict[int, dict[str, float]]:
        return {r.batch_size: {"p50_ms": r.p50_ms, "p95_ms": r.p95_ms, "mean_ms": r.mean_ms,
                               "throughput": r.throughput, "calls": r.calls} for r in self.rows}

    def __repr__(self) -> str:
        lines = [f"onnxruntime benchmark of {self.source} (threads={self.threads or 'default'})",
                 f"{'batch':>7} {'p50 ms':>10} {'p95 ms':>10} {'samples/s':>12} {'calls':>7}"]
        lines += [f"{r.batch_size:>7} {r.p50_ms:>10.3f} {r.p95_ms:>10.3f} {r.throughput:>12.1f} {r.calls:>7}"
                  for r in self.rows]
        return "\n".join(lines)


class Predictor:
    """An onnxruntime session with numpy in / numpy out, batch-first.

    Parameters
    ----------
    source : str / PathLike / Chain / QuantizedChain / onnx.ModelProto
        ``.onnx`` file (loaded as is), ``.jld2`` Flux checkpoint (read with ``pfc.load``, exported in memory)
        or a model (exported in memory with ``pfc.export_onnx``'s defaults for its type).
    threads : int, optional
        onnxruntime intra-op threads (``None`` = onnxruntime's default, one per core).
    input_shape : tuple, optional
        Per-sample input shape for exporting a model whose shape cannot be inferred (e.g. it starts with a
        pooling layer), or to fix the spatial size of a Conv model; passed to ``export_onnx``.

    Raises
    ------
    FileNotFoundError for a missing file; ValueError for a corrupt ``.onnx`` or one onnxruntime rejects.
    """

    def __init__(self, source: Any, threads: int | None = None, *, input_shape: Sequence[int] | None = None):
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads: expected None or an int >= 1; got {threads!r}")
        self.threads = threads
        self.source_name, data = _model_bytes(source, input_shape)
        self.session = _session(data, threads, self.source_name)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.output_name = self.session.get_outputs()[0].name
        # per-sample shape: ints where fixed, None where symbolic (e.g. "H")
        self.input_shape: tuple[int | None, ...] = tuple(d if isinstance(d, int) else None for d in inp.shape[1:])
        self.batch_dim: int | None = inp.shape[0] if isinstance(inp.shape[0], int) else None

    def __repr__(self) -> str:
        shape = ", ".join("?" if d is None else str(d) for d in self.input_shape)
        return f"Predictor({self.source_name}, input=(N, {shape}), threads={self.threads or 'default'})"

    # -- inference ---------------------------------------------------------------------------------
    def predict(self, x: Any) -> np.ndarray:
        """Run the model on ``x``: ``(N, *input_shape)`` -> ``(N, ...)`` float32.

        A single sample without the batch dim (``(784,)`` for an MLP, ``(C, H, W)`` for a CNN) returns a single
        output without the batch dim, like Flux's ``model(rand(784))``.
        """
        try:
            arr = np.asarray(x, dtype=np.float32)
        except (TypeError, ValueError) as err:
            raise ValueError(f"predict: x must be numeric array-like; {err}") from None
        single = arr.ndim == len(self.input_shape)
        if single:
            arr = arr[None]
        self._check_shape(arr, single)
        y = self.session.run([self.output_name], {self.input_name: np.ascontiguousarray(arr)})[0]
        return y[0] if single else y

    __call__ = predict

    def _check_shape(self, arr: np.ndarray, single: bool) -> None:
        exp = self.input_shape
        ok = arr.ndim == 1 + len(exp) and all(e is None or e == g for e, g in zip(exp, arr.shape[1:]))
        if ok and self.batch_dim is not None and arr.shape[0] != self.batch_dim:
            ok = False
        if not ok:
            n = "N" if self.batch_dim is None else str(self.batch_dim)
            expected = "(" + ", ".join([n, *("?" if e is None else str(e) for e in exp)]) + ")"
            given = tuple(arr.shape[1:]) if single else tuple(arr.shape)
            raise ValueError(f"predict: expected input of shape {expected} (or one sample without the batch "
                             f"dim); got shape {given}")

    # -- timing ------------------------------------------------------------------------------------
    def benchmark(self, batch_sizes: Sequence[int] = (1, 64, 256), seconds: float = 2.0, *,
                  input_shape: Sequence[int] | None = None, warmup: int = 3, seed: int = 0) -> BenchmarkResult:
        """Time ``predict`` on random inputs: p50/p95 latency (ms per call) and throughput (samples/s).

        Each batch size runs ``warmup`` untimed calls, then calls for ``seconds`` (at least 5 calls).
        ``input_shape`` fills symbolic dims (e.g. H, W of a Conv model).
        """
        sizes = _check_batch_sizes(batch_sizes)
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
            raise ValueError(f"seconds: expected a positive number; got {seconds!r}")
        shape = self._concrete_shape(input_shape)
        rng = np.random.default_rng(seed)
        rows = []
        for bs in sizes:
            x = rng.standard_normal((bs, *shape)).astype(np.float32)
            feed = {self.input_name: x}
            for _ in range(max(0, int(warmup))):
                self.session.run([self.output_name], feed)
            times: list[float] = []
            start = time.perf_counter()
            while len(times) < 5 or time.perf_counter() - start < seconds:
                t0 = time.perf_counter()
                self.session.run([self.output_name], feed)
                times.append(time.perf_counter() - t0)
            t = np.asarray(times)
            rows.append(BenchmarkRow(bs, float(np.percentile(t, 50) * 1e3), float(np.percentile(t, 95) * 1e3),
                                     float(t.mean() * 1e3), float(bs / t.mean()), len(t)))
        return BenchmarkResult(rows, self.threads, self.source_name)

    def _concrete_shape(self, input_shape: Sequence[int] | None) -> tuple[int, ...]:
        if input_shape is not None:
            shape = tuple(int(d) for d in input_shape)
            if len(shape) != len(self.input_shape) or any(e is not None and e != g
                                                          for e, g in zip(self.input_shape, shape)):
                raise ValueError(f"input_shape: {shape} does not fit the model's per-sample input {self.input_shape}")
            return shape
        if any(d is None for d in self.input_shape):
            raise ValueError(f"input_shape: the model input has symbolic dims {self.input_shape}; "
                             "pass input_shape=(C, H, W) to benchmark")
        return tuple(int(d) for d in self.input_shape)  # type: ignore[arg-type]


def _check_batch_sizes(batch_sizes: Any) -> list[int]:
    if isinstance(batch_sizes, int) and not isinstance(batch_sizes, bool):
        batch_sizes = (batch_sizes,)
    try:
        sizes = [int(b) for b in batch_sizes if not isinstance(b, bool) and int(b) == b and b >= 1]
    except (TypeError, ValueError):
        sizes = []
    if not sizes or len(sizes) != len(tuple(batch_sizes)):
        raise ValueError(f"batch_sizes: expected positive ints, e.g. (1, 64, 256); got {batch_sizes!r}")
    return sizes


def _model_bytes(source: Any, input_shape: Sequence[int] | None) -> tuple[str, bytes]:
    """``(display name, serialized ONNX)`` for any supported source."""
    from ..io.onnx import to_onnx_model

    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        ext = os.path.splitext(path)[1].lower()
        if ext not in (".onnx", ".jld2"):
            raise ValueError(f"source: expected a .onnx or .jld2 file (or a model); got {path!r}")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Predictor: file {path!r} does not exist")
        if ext == ".onnx":
            from ..io.onnx import load_onnx_proto

            # clear errors for a corrupt file before onnxruntime sees it; external data is read (relative to
            # the model's folder, never outside it) into the bytes handed to onnxruntime
            return os.path.basename(path), load_onnx_proto(path).SerializeToString()
        from ..io.checkpoint import load

        model = load(path)
        return os.path.basename(path), to_onnx_model(model, input_shape=input_shape).SerializeToString()
    if hasattr(source, "SerializeToString") and hasattr(source, "graph"):  # an onnx.ModelProto
        return "ModelProto", source.SerializeToString()
    if callable(source):
        return type(source).__name__, to_onnx_model(source, input_shape=input_shape).SerializeToString()
    raise ValueError(f"source: expected a .onnx/.jld2 path, a Chain or an onnx.ModelProto; got {type(source).__name__}")


def _session(data: bytes, threads: int | None, name: str):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is not None:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise ValueError(f"onnxruntime could not load {name}: {err}") from None
