"""Per-layer sensitivity analysis: how much accuracy each layer loses at each bit width and sparsity.

``sensitivity(model, X, y)`` quantizes (symmetric, per-channel) or magnitude-prunes ONE layer at a time, all other
layers untouched, and measures accuracy on ``(X, y)``. The result, a :class:`SensitivityTable`, prints as a grid
(layers x settings) and suggests mixed precision (``suggest_bits``) and per-layer sparsity
(``suggest_sparsity``) for a tolerated accuracy drop — the survey's "per-layer tuning" and Distiller's
sensitivity analysis.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ._common import check_inputs, check_labels
from ..model.walk import modules
from .quantize import SUPPORTED_BITS, as_float_layer, quantize, quantized_class

DEFAULT_SPARSITIES = (0.5, 0.75, 0.9, 0.95)


class SensitivityTable:
    """Accuracy per layer per setting.

    Attributes
    ----------
    baseline : float — accuracy of the unmodified model (fraction in [0, 1]).
    rows : list of dict — one per (layer, setting): ``layer`` (Flux path), ``type`` (layer repr),
        ``kind`` (``"bits"`` / ``"sparsity"``), ``value`` (bits or sparsity), ``setting`` (label such as
        ``"int4"`` or ``"90%"``), ``accuracy``, ``drop`` (baseline - accuracy, fraction).
    """

    def __init__(self, baseline: float, rows: list[dict[str, Any]]) -> None:
        self.baseline = baseline
        self.rows = rows

    def to_dict(self) -> dict[str, Any]:
        """``{"baseline": float, "rows": [...]}`` (JSON-friendly)."""
        return {"baseline": self.baseline, "rows": [dict(r) for r in self.rows]}

    def layers(self) -> list[str]:
        return list(dict.fromkeys(r["layer"] for r in self.rows))

    def accuracy(self, layer: str, kind: str, value: float) -> float:
        for r in self.rows:
            if r["layer"] == layer and r["kind"] == kind and r["value"] == value:
                return r["accuracy"]
        raise KeyError((layer, kind, value))

    def suggest_bits(self, max_drop: float = 0.005) -> dict[str, int | None]:
        """Fewest bits per layer whose drop (measured alone) is <= ``max_drop``; None = keep float.

        The result can be passed to ``pfc.quantize(model, bits=...)``. Drops of several layers add up roughly,
        so check the combined model's accuracy.
        """
        out: dict[str, int | None] = {}
        for layer in self.layers():
            ok = [r["value"] for r in self.rows if r["layer"] == layer and r["kind"] == "bits"
                  and r["drop"] <= max_drop]
            out[layer] = min(ok) if ok else None
        return out

    def suggest_sparsity(self, max_drop: float = 0.005) -> dict[str, float]:
        """Highest sparsity per layer whose drop (measured alone) is <= ``max_drop`` (0.0 if none)."""
        out: dict[str, float] = {}
        for layer in self.layers():
            ok = [r["value"] for r in self.rows if r["layer"] == layer and r["kind"] == "sparsity"
                  and r["drop"] <= max_drop]
            out[layer] = max(ok) if ok else 0.0
        return out

    def __repr__(self) -> str:
        settings = list(dict.fromkeys(r["setting"] for r in self.rows))
        width = max(8, *(len(s) for s in settings))
        names = {r["layer"]: f"{r['layer']} {r['type']}" for r in self.rows}
        lw = max(len(n) for n in names.values())
        lines = [f"accuracy per layer (baseline {100 * self.baseline:.2f}%), one layer changed at a time",
                 f"{'layer':<{lw}} " + " ".join(f"{s:>{width}}" for s in settings)]
        for layer in self.layers():
            cells = {r["setting"]: f"{100 * r['accuracy']:.2f}%" for r in self.rows if r["layer"] == layer}
            lines.append(f"{names[layer]:<{lw}} " + " ".join(f"{cells.get(s, '-'):>{width}}" for s in settings))
        return "\n".join(lines)

    __str__ = __repr__


def _check_settings(bits: Any, sparsities: Any) -> tuple[tuple[int, ...], tuple[float, ...]]:
    try:
        bits = tuple(bits)
        sparsities = tuple(sparsities)
    except TypeError:
        raise ValueError("bits and sparsities must be sequences, e.g. bits=(8, 4, 2), "
                         "sparsities=(0.5, 0.9)") from None
    for b in bits:
        if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or int(b) not in SUPPORTED_BITS:
            raise ValueError(f"bits entries must be integers in {SUPPORTED_BITS}, got {b!r}")
    for s in sparsities:
        if isinstance(s, bool) or not isinstance(s, (int, float, np.number)) or not 0.0 <= float(s) < 1.0:
            raise ValueError(f"sparsities entries must be numbers in [0, 1), got {s!r}")
    if not bits and not sparsities:
        raise ValueError("give at least one setting in bits or sparsities")
    return tuple(int(b) for b in bits), tuple(float(s) for s in sparsities)


def _prune_one(model: Any, path: str, sparsity: float) -> Any:
    """A copy of ``model`` with the weight of the layer at ``path`` magnitude-pruned to ``sparsity``."""
    from .prune import prune

    return prune(model, sparsity, scope="layer", include=path)


def sensitivity(model: Any, X: Any, y: Any, bits: Sequence[int] = (8, 4, 2),
                sparsities: Sequence[float] = DEFAULT_SPARSITIES) -> SensitivityTable:
    """Accuracy per layer per setting (one layer modified at a time).

    Parameters
    ----------
    model : Chain (not modified) with Dense/Conv layers.
    X, y : evaluation data ``(N, *input_shape)`` and int labels ``(N,)`` (a held-out slice is enough).
    bits : bit widths to try (symmetric, per-channel weight quantization; 1 = binary).
    sparsities : magnitude-pruning sparsities in [0, 1) to try per layer.

    Returns
    -------
    SensitivityTable — ``rows``, ``baseline``, a text grid as ``repr``, ``suggest_bits``/``suggest_sparsity``.
    """
    from ..train.fit import accuracy

    if not hasattr(model, "layers"):
        raise ValueError(f"model must be a Chain, got {type(model).__name__}")
    X = check_inputs(model, X)
    y = check_labels(y, len(X))
    bits, sparsities = _check_settings(bits, sparsities)
    targets = [(p, l) for p, l in modules(model) if quantized_class(as_float_layer(l)) is not None]
    if not targets:
        raise ValueError("model has no Dense/Conv/CrossCor layer to analyse")

    baseline = accuracy(model, X, y)
    rows: list[dict[str, Any]] = []
    for path, layer in targets:
        for b in bits:
            acc = accuracy(quantize(model, bits={path: b}, scheme="symmetric", granularity="per_channel"), X, y)
            rows.append({"layer": path, "type": repr(as_float_layer(layer)), "kind": "bits", "value": b,
                         "setting": "binary" if b == 1 else f"int{b}", "accuracy": acc, "drop": baseline - acc})
        for s in sparsities:
            acc = accuracy(_prune_one(model, path, s), X, y)
            rows.append({"layer": path, "type": repr(as_float_layer(layer)), "kind": "sparsity", "value": s,
                         "setting": f"{100 * s:g}%", "accuracy": acc, "drop": baseline - acc})
    return SensitivityTable(baseline, rows)
