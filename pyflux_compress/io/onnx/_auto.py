"""``format="auto"``: measure the export forms in onnxruntime and keep the fastest one accurate enough.

Why measure instead of a rule: which int8 form is faster depends on the layers, the batch size and the thread
count (docs/deployment.md has the table). On onnxruntime's CPU kernels int8 wins on large Dense layers
(``MatMulInteger``/``QGemm``: 3x at batch 256 for a 14.7M-weight MLP) but *loses* on small convolutions
(weight-only int8 Conv dequantizes its kernel and runs the float Conv; a QDQ Conv adds quantize/dequantize
around every activation), so for a CNN the fastest form is often "int8 Dense, float Conv".

Candidates (each exported in memory, never written):

* a float model: ``fp32``; ``dynamic`` (int8 per-channel symmetric weights, ``pfc.quantize(model, 8,
  granularity="per_channel")``); ``qdq`` (int8 symmetric weights and uint8 activations calibrated on ``data``: what onnxruntime's
  ``quantize_static`` writes, and its fastest integer Conv kernels; affine weights made the second
  QLinearConv of a CNN 1.4x slower); and, when it
  has both Conv and Dense layers, ``dynamic`` and ``qdq`` with only the Dense layers quantized;
* a QuantizedChain (quantized by the user): its ``fp32`` (dequantized) form, ``dynamic``, and ``qdq`` when
  its activations are calibrated — it is never re-quantized.

Accuracy: each candidate's onnxruntime outputs on ``data`` are compared with ``model``'s own NumPy forward.
For class scores (2-D output, >= 2 columns) the measure is top-1 agreement, accepted if
``1 - agreement <= tolerance``; otherwise the relative RMS error, accepted if ``<= tolerance``.

Speed: one session per candidate with ``threads`` intra-op threads; rounds of timed calls at ``batch_size``
interleaved across candidates (so load on a shared machine hits all alike); the median per call. A quantized
form must beat fp32 by ``margin`` (5%) to be chosen: within measurement noise fp32 is kept, as it is exact.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ...model.walk import modules
from ._export import layer_kind

__all__ = ["FormatChoice", "choose_format"]

Builder = Callable[..., Any]  # to_onnx_model(model, *, opset, input_shape, format) -> onnx.ModelProto

MARGIN = 0.05


@dataclass
class FormatChoice:
    """What :func:`choose_format` measured and chose.

    ``format`` ("fp32" / "qdq" / "dynamic") and ``model`` (the Chain or QuantizedChain to export with it) are
    the choice; ``label`` names the candidate (e.g. ``"dynamic (Dense only)"``). ``latency_ms`` maps every
    candidate label to its median milliseconds per call at ``batch_size`` with ``threads`` threads;
    ``error`` to its accuracy measure (``1 - top-1 agreement`` or relative RMS error, see ``metric``);
    ``rejected`` to the reason a candidate was not eligible.
    """

    label: str
    format: str
    model: Any
    batch_size: int
    threads: int
    tolerance: float
    metric: str
    latency_ms: dict[str, float] = field(default_factory=dict)
    error: dict[str, float] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)

    def table(self) -> str:
        """A Markdown table of every candidate: latency, speed vs fp32, accuracy measure, verdict."""
        base = self.latency_ms.get("fp32")
        rows = ["| form | ms per call | speed vs fp32 | " + self.metric + " | |", "|---|---|---|---|---|"]
        for label, ms in self.latency_ms.items():
            speed = f"{base / ms:.2f}x" if base else "-"
            if label == self.label:
                verdict = "**chosen**"
            elif label in self.rejected:
                verdict = self.rejected[label]
            elif ms < self.latency_ms[self.label]:
                verdict = f"faster by less than {MARGIN:.0%}: exact fp32 kept"
            else:
                verdict = "slower"
            rows.append(f"| {label} | {ms:.3f} | {speed} | {self.error.get(label, float('nan')):.4f} | {verdict} |")
        return "\n".join(rows)

    def as_dict(self) -> dict[str, Any]:
        return {"chosen": self.label, "format": self.format, "batch_size": self.batch_size,
                "threads": self.threads, "tolerance": self.tolerance, "metric": self.metric,
                "latency_ms": self.latency_ms, "error": self.error, "rejected": self.rejected}

    def __repr__(self) -> str:
        lat = ", ".join(f"{k} {v:.3f} ms" for k, v in self.latency_ms.items())
        return (f"FormatChoice({self.label!r} at batch {self.batch_size}, {self.threads} thread(s); {lat}; "
                f"tolerance {self.tolerance} on {self.metric})")


def _candidates(model: Any, calibration: np.ndarray) -> dict[str, tuple[Any, str]]:
    """Label -> (model to export, format)."""
    from ...compression.quantize import quantize

    leaves = [layer for _, layer in modules(model)]
    kinds = [layer_kind(layer) for layer in leaves]
    quantized = [layer for layer in leaves if hasattr(layer, "qweight")]
    if quantized:
        out = {"fp32": (model, "fp32"), "dynamic": (model, "dynamic")}
        if all(getattr(layer, "act_scale", None) is not None for layer in quantized):
            out["qdq"] = (model, "qdq")
        return out
    out = {"fp32": (model, "fp32"),
           "dynamic": (quantize(model, 8, granularity="per_channel", activations="dynamic"), "dynamic"),
           "qdq": (quantize(model, 8, scheme="symmetric_weights", granularity="per_channel",
                            calibration=calibration), "qdq")}
    if "Dense" in kinds and any(k in ("Conv", "CrossCor") for k in kinds):
        dense = {path: 8 for path, layer in modules(model) if layer_kind(layer) == "Dense"}
        out["dynamic (Dense only)"] = (quantize(model, dense, granularity="per_channel", activations="dynamic"),
                                       "dynamic")
        out["qdq (Dense only)"] = (quantize(model, dense, scheme="symmetric_weights", granularity="per_channel",
                                            calibration=calibration), "qdq")
    return out


def _error(ref: np.ndarray, out: np.ndarray) -> tuple[float, str]:
    if ref.ndim == 2 and ref.shape[1] >= 2:
        return float(np.mean(ref.argmax(1) != out.argmax(1))), "1 - top-1 agreement"
    denom = float(np.sqrt(np.mean(np.square(ref, dtype=np.float64)))) or 1.0
    return float(np.sqrt(np.mean(np.square(out - ref, dtype=np.float64)))) / denom, "relative RMS error"


def choose_format(model: Any, data: Any, *, build: Builder, batch_size: int = 1, threads: int | None = None,
                  tolerance: float = 0.01, seconds: float = 3.0, opset: int = 17,
                  input_shape: Sequence[int | str] | None = None) -> FormatChoice:
    """Measure the candidate ONNX forms of ``model`` and return the fastest within ``tolerance``.

    ``build`` is the package's ``to_onnx_model`` (passed in by ``pfc.choose_format``: this module sits below
    the package and does not import it).

    Parameters
    ----------
    model : Chain or QuantizedChain.
    data : array ``(N, *input_shape)``, N >= 1 — representative inputs: accuracy is measured on all of them
        (and a float model's static int8 form is calibrated on the first 256); latency on ``batch_size`` of
        them (repeated if N is smaller).
    batch_size : int >= 1 — the batch size you will run.
    threads : int >= 1 or None — onnxruntime intra-op threads you will use (None: ``pfc.threads`` default).
    tolerance : float in [0, 1] — see the module doc (default 0.01: at most 1% of top-1 predictions change).
    seconds : float > 0 — total time budget of the latency measurement (about; at least 5 rounds are run).
    opset, input_shape : as :func:`export_onnx`.
    """
    from ..._validate import check_array, check_int
    from ...threads import resolve

    if not callable(model):
        raise ValueError(f"model: expected a Chain or layer; got {type(model).__name__}")
    if data is None:
        raise ValueError("format='auto' needs data=: representative inputs (N, *input_shape) to calibrate and to "
                         "check each form's accuracy on")
    data = check_array("data", data)
    batch_size = check_int("batch_size", batch_size, min=1)
    nthreads = resolve(threads)
    if not (isinstance(tolerance, (int, float)) and 0 <= tolerance <= 1):
        raise ValueError(f"tolerance: expected a number in [0, 1]; got {tolerance!r}")
    if not (isinstance(seconds, (int, float)) and seconds > 0):
        raise ValueError(f"seconds: expected a positive number; got {seconds!r}")
    data = np.ascontiguousarray(data, dtype=np.float32)
    if len(data) < 1:
        raise ValueError("data: needs at least one sample")
    shape = tuple(input_shape) if input_shape is not None else None
    if shape is not None and tuple(data.shape[1:]) != tuple(d for d in shape if isinstance(d, int)) and \
            all(isinstance(d, int) for d in shape):
        raise ValueError(f"data: per-sample shape {data.shape[1:]} does not match input_shape {shape}")
    import onnxruntime as ort

    ref = np.asarray(model(data))
    batch = data[np.arange(batch_size) % len(data)]
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = nthreads
    opts.inter_op_num_threads = 1

    sessions, error, rejected, metric = {}, {}, {}, ""
    for label, (cand, fmt) in _candidates(model, data[:256]).items():
        proto = build(cand, opset=opset, input_shape=shape, format=fmt)
        sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        out = np.concatenate([sess.run(None, {name: data[i:i + 1024]})[0] for i in range(0, len(data), 1024)])
        error[label], metric = _error(ref, out)
        if error[label] > tolerance:
            rejected[label] = f"{metric} {error[label]:.4f} > tolerance {tolerance}"
        sessions[label] = (sess, name, cand, fmt)

    # interleaved timing rounds: calls per round sized from one warm call so the budget is kept
    per_call = {}
    for label, (sess, name, _, _) in sessions.items():
        sess.run(None, {name: batch})
        t0 = time.perf_counter()
        sess.run(None, {name: batch})
        per_call[label] = max(time.perf_counter() - t0, 1e-6)
    rounds = 5
    budget = seconds / (rounds * len(sessions))
    samples: dict[str, list[float]] = {label: [] for label in sessions}
    for r in range(rounds):
        order = list(sessions) if r % 2 == 0 else list(reversed(sessions))
        for label in order:
            sess, name, _, _ = sessions[label]
            calls = max(1, min(200, int(budget / per_call[label])))
            t0 = time.perf_counter()
            for _ in range(calls):
                sess.run(None, {name: batch})
            samples[label].append((time.perf_counter() - t0) / calls)
    latency = {label: statistics.median(v) * 1e3 for label, v in samples.items()}

    eligible = [label for label in sessions if label not in rejected]
    best = min(eligible, key=lambda k: latency[k]) if eligible else "fp32"
    if best != "fp32" and "fp32" in latency and latency[best] > (1 - MARGIN) * latency["fp32"]:
        best = "fp32"  # within noise of fp32: keep the exact form
    _, _, chosen, fmt = sessions[best]
    return FormatChoice(best, fmt, chosen, batch_size, nthreads, float(tolerance), metric, latency, error, rejected)
