"""Sweep a grid of compression settings and plot accuracy against size and against sparsity.

Each grid point is ``sparsity x bits``: the model is pruned (or sparsified, or structurally pruned) to the
sparsity, optionally fine-tuned with the pruning masks held, then optionally quantized to ``bits``. Every point
records parameters, nonzeros, measured sparsity, bytes of the compressed archive (the storage form in which
both pruning and quantization pay off) and of fp32 dense, and test accuracy. Archive bytes come from
``pfc.size_report``, which encodes each model once into nothing (no file is written; a 3x2 sweep of the
article's MLP costs about what a hand-written loop with ``np.savez_compressed`` sizes does, see
``benchmarks/bench_archive.py``).

``SweepResult.plot(path)`` writes a PNG with two panels (accuracy vs archive size, accuracy vs sparsity) using
matplotlib, the package's ``[plot]`` extra; ``SweepResult.to_json(path)`` writes the points.
"""
from __future__ import annotations

import io
import json
import os
import sys
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence, TextIO

import numpy as np

from .._files import write_atomic
from .._validate import check_fraction
from .report import count_weights, prepare_input, render_table, storage_bytes

__all__ = ["SweepPoint", "SweepResult", "sweep", "METHODS"]

METHODS = ("prune", "sparsify", "structured")


@dataclass
class SweepPoint:
    """One setting and its measured effect. ``size_bytes`` is the archive size, ``fp32_bytes`` this model's dense
    float32 size, ``ratio`` the *original* model's dense fp32 bytes over ``size_bytes``; accuracy is a fraction."""

    label: str
    method: str
    target_sparsity: float
    bits: int | None
    params: int
    nonzeros: int
    sparsity: float
    size_bytes: int
    fp32_bytes: int
    ratio: float
    accuracy: float

    def row(self) -> tuple[str, ...]:
        """Display cells, in :data:`SweepResult.HEADERS` order."""
        return (self.label, f"{self.target_sparsity:.2f}", "fp32" if self.bits is None else str(self.bits),
                str(self.params), str(self.nonzeros), f"{self.sparsity:.4f}", str(self.size_bytes),
                f"{self.ratio:.2f}", f"{self.accuracy:.4f}")


@dataclass
class SweepResult:
    """The points of a sweep, with the dense fp32 baseline accuracy for reference."""

    HEADERS = ("setting", "target", "bits", "params", "nonzeros", "sparsity", "archive_bytes", "ratio",
               "accuracy")
    points: list[SweepPoint]
    baseline_accuracy: float
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"baseline_accuracy": self.baseline_accuracy, "settings": self.settings,
                "points": [asdict(p) for p in self.points]}

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """The points as JSON (written atomically to ``path`` when given)."""
        text = json.dumps(self.to_dict(), indent=2, allow_nan=False)
        if path is not None:
            write_atomic(path, text + "\n")
        return text

    def print(self, file: TextIO | None = None) -> None:
        """Print the points as a table (rich when importable)."""
        render_table(self.HEADERS, [p.row() for p in self.points],
                     title=f"Sweep (dense fp32 baseline accuracy {self.baseline_accuracy:.4f})", file=file)

    def plot(self, path: str | os.PathLike) -> None:
        """Write a PNG: accuracy vs archive size (log scale) and accuracy vs sparsity, one line per bit width.

        Raises ImportError with the install command when matplotlib (the ``[plot]`` extra) is missing.
        """
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
            from matplotlib.ticker import FuncFormatter, NullFormatter
        except ImportError as err:
            raise ImportError("sweep plot needs matplotlib: pip install 'pyflux-compress[plot]'") from err
        # the object-oriented API: no pyplot, so the caller's global backend is untouched
        fig = Figure(figsize=(11, 4.5), dpi=100)
        FigureCanvasAgg(fig)
        ax_size, ax_sp = fig.subplots(1, 2)
        groups: dict[str, list[SweepPoint]] = {}
        for p in self.points:
            groups.setdefault("fp32" if p.bits is None else f"int{p.bits}", []).append(p)
        for name, pts in groups.items():
            pts = sorted(pts, key=lambda p: p.target_sparsity)
            ax_size.plot([p.size_bytes / 1024 for p in pts], [100 * p.accuracy for p in pts], "o-", label=name)
            ax_sp.plot([100 * p.sparsity for p in pts], [100 * p.accuracy for p in pts], "o-", label=name)
        for ax in (ax_size, ax_sp):
            ax.axhline(100 * self.baseline_accuracy, color="gray", ls="--", lw=1, label="dense fp32")
            ax.set_ylabel("test accuracy (%)")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8)
        ax_size.set_xscale("log")
        ax_size.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 20, 50, 100 not 2x10^1
        ax_size.xaxis.set_minor_formatter(NullFormatter())
        ax_size.set_xlabel("archive size (KiB, log scale)")
        ax_size.set_title("accuracy vs size")
        ax_sp.set_xlabel("sparsity (% of parameters that are zero)")
        ax_sp.set_title("accuracy vs sparsity")
        fig.suptitle(f"{self.settings.get('method', 'prune')} sweep: {self.settings.get('model', '')}", fontsize=9)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        write_atomic(path, buf.getvalue())


def sweep(model: Any, X: np.ndarray, y: np.ndarray, *, sparsities: Sequence[float] = (0.0, 0.5, 0.8, 0.9, 0.95),
          bits: Sequence[int | None] = (None, 8, 4), method: str = "prune", scope: str = "global",
          finetune: tuple[np.ndarray, np.ndarray] | None = None, epochs: int = 1, batchsize: int = 128,
          lr: float = 1e-3, seed: int = 0, progress: bool = True) -> SweepResult:
    """Evaluate every ``(sparsity, bits)`` combination of compressing ``model``.

    Parameters
    ----------
    model : Chain
        A trained float model (not modified).
    X, y : evaluation data, ``(N, features...)`` and int labels ``(N,)``.
    sparsities : sequence of float in [0, 1)
        Target sparsity (``method="structured"``: fraction of neurons/filters removed).
    bits : sequence of int or None
        Weight bit widths; None keeps float32.
    method : {"prune", "sparsify", "structured"}
        ``pfc.prune(scope=scope)``, ``pfc.sparsify`` or ``pfc.prune_structured``.
    finetune : (Xtrain, ytrain) or None
        When given, each pruned model is fine-tuned ``epochs`` epochs (masks held) before quantization.

    Returns
    -------
    SweepResult
    """
    import pyflux_compress as pfc

    if method not in METHODS:
        raise ValueError(f"sweep: method must be one of {METHODS}, got {method!r}")
    sparsities = tuple(check_fraction("sweep: every value of sparsities", s, inclusive=(True, False))
                       for s in sparsities)
    if not sparsities:
        raise ValueError("sweep: sparsities must not be empty")
    bits = tuple(bits)
    if not bits or any(b is not None and (not isinstance(b, (int, np.integer)) or b < 1) for b in bits):
        raise ValueError(f"sweep: bits must be positive integers or None, got {bits!r}")
    if not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"sweep: epochs must be a non-negative integer, got {epochs!r}")
    X = prepare_input(model, X)
    y = np.asarray(y)
    if finetune is not None:
        finetune = (prepare_input(model, finetune[0]), np.asarray(finetune[1]))

    from tqdm.auto import tqdm

    baseline = float(pfc.accuracy(model, X, y))
    original_fp32 = 4 * count_weights(model)[0]
    points: list[SweepPoint] = []
    bar = tqdm(total=len(sparsities) * len(bits), desc="sweep", disable=not progress, file=sys.stderr)
    for s in sparsities:
        pruned = _compress(pfc, model, method, s, scope)
        if finetune is not None and epochs > 0 and s > 0:
            pfc.fit(pruned, finetune[0], finetune[1], epochs=epochs, batchsize=batchsize, opt=pfc.Adam(lr),
                    progress=False, seed=seed)
        for b in bits:
            m = pruned if b is None else pfc.quantize(pruned, bits=int(b), granularity="per_channel")
            params, nonzeros = count_weights(m)
            sizes = storage_bytes(m)
            if sizes.get("archive") is None:
                raise RuntimeError("sweep: pfc.size_report gave no archive size")
            label = f"{method} {s:.2f}" + ("" if b is None else f" + int{b}")
            points.append(SweepPoint(label=label, method=method, target_sparsity=s, bits=None if b is None else int(b),
                                     params=params, nonzeros=nonzeros,
                                     sparsity=1.0 - nonzeros / params if params else 0.0,
                                     size_bytes=int(sizes["archive"]), fp32_bytes=int(sizes["fp32"]),
                                     ratio=original_fp32 / int(sizes["archive"]),
                                     accuracy=float(pfc.accuracy(m, X, y))))
            bar.update(1)
    bar.close()
    settings = {"method": method, "scope": scope, "sparsities": list(sparsities),
                "bits": [None if b is None else int(b) for b in bits],
                "finetune_epochs": epochs if finetune is not None else 0, "model": str(model)}
    return SweepResult(points=points, baseline_accuracy=baseline, settings=settings)


def _compress(pfc: Any, model: Any, method: str, s: float, scope: str) -> Any:
    if s == 0.0:
        return model.copy()
    if method == "prune":
        return pfc.prune(model, s, scope=scope)
    if method == "sparsify":
        return pfc.sparsify(model, s)
    return pfc.prune_structured(model, s)
