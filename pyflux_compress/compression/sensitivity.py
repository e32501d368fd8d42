"""Per-layer sensitivity analysis and budgeted mixed precision.

``sensitivity(model, X, y)`` quantizes (symmetric, per-channel, or the ``quantize`` options you pass) or
magnitude-prunes ONE layer at a time, all other layers untouched, and measures accuracy on ``(X, y)`` -- a
validation split (held out from training, never the test set). The result, a :class:`SensitivityTable`, prints
as a grid (layers x settings), suggests per-layer sparsity (``suggest_sparsity``) and, with
``suggest_bits``, a mixed-precision policy under a budget: an accuracy drop of the *combined* model (measured
on the same validation split, not added up from single layers) and/or a size in bytes.

``suggest_bits`` splits the validation split into a search part and a confirmation part (``confirm``, half by
default; a fixed random split). The search is greedy: start with every layer at the widest tested bit width
(backing the most sensitive layers off to float while that alone is over budget); repeatedly take the cheapest
step down -- the one saving the most bytes per point of single-layer sensitivity -- quantize the whole model
with it and keep it only if its measured combined drop on the search part plus a sampling margin stays within
``max_drop`` (else that layer stays where it is); stop when nothing can move, or, with ``budget_bytes`` alone,
as soon as the model fits. Then the result is measured on the confirmation part, which no decision has looked
at (a search that tries many steps keeps the ones whose loss its own images' noise hides); while drop plus
margin there exceeds ``max_drop``, the accepted steps are undone, last first.

The margin. The budget is about new data, the measurement about the validation split, so a step is kept only
if ``drop + margin <= max_drop`` with ``margin = z * sd(d) * sqrt(1/n + 1/m)``: ``d_i`` = 1 if the float model
classifies validation image ``i`` right and the quantized one wrong, -1 for the reverse, 0 otherwise (paired
predictions on the same ``n`` images of the part measured, so only the images whose outcome changes add
variance: ``sd(d)**2`` is about the share of changed outcomes); ``sd(d)**2 / n`` is the measured drop's sampling
variance, ``sd(d)**2 / m`` that of the drop a held-out split of ``m`` images will show (``holdout``; default
``m`` = the whole validation split; ``holdout=0`` bounds the expected drop on unlimited data instead); ``z``
the normal quantile of ``confidence`` (one-sided, 0.95 -> 1.645). With a 10,000-image validation split (5,000
per part) and 3 % changed outcomes the margin is 0.49 points.
"""
from __future__ import annotations

from statistics import NormalDist
from typing import Any, Sequence

import numpy as np

from ._common import check_inputs, check_labels
from ..model.walk import modules
from .quantize import SUPPORTED_BITS, as_float_layer, quantize, quantized_class

FLOAT_BYTES = 4


def paired_differences(base_ok: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Per-image paired differences (float64) of two models scored on the same images: 1 where only the
    reference (``base_ok``) is right, -1 where only the other is, 0 where they agree. Their mean is the drop
    (a fraction) and ``std / sqrt(n)`` its standard error: only the images whose outcome changes add variance.
    The one form of this difference for ``suggest_bits``' margin and the search's ``paired_drop_se``."""
    return np.asarray(base_ok).astype(np.float64) - np.asarray(ok).astype(np.float64)


class BitPolicy(dict):
    """``{layer path: bits or None}`` for ``pfc.quantize(model, bits=policy)``, with what was measured.

    Attributes: ``size_bytes`` (weights at their bit widths, bit-packed, plus one float32 scale per output
    channel; every other parameter float32), ``float_bytes`` (the same model in float32), ``accuracy`` and
    ``drop`` (combined, measured on the whole validation split; None if not measured), ``confirm_drop`` and
    ``margin`` (the drop on the confirmation part the search never saw, and its sampling margin: see the module
    docstring; ``confirm_drop + margin <= max_drop``), ``baseline``, ``max_drop`` /
    ``budget_bytes`` (the budget asked for) and ``steps`` (the greedy decisions, in order).
    """

    def __init__(self, bits: dict[str, int | None], **info: Any) -> None:
        super().__init__(bits)
        self.size_bytes: int = info["size_bytes"]
        self.float_bytes: int = info["float_bytes"]
        self.accuracy: float | None = info.get("accuracy")
        self.baseline: float = info["baseline"]
        self.drop: float | None = None if self.accuracy is None else self.baseline - self.accuracy
        self.margin: float = info.get("margin", 0.0)
        self.confirm_drop: float | None = info.get("confirm_drop")
        self.max_drop = info.get("max_drop")
        self.budget_bytes = info.get("budget_bytes")
        self.steps: list[str] = info.get("steps", [])

    def __repr__(self) -> str:
        bits = ", ".join(f"{k}: {v}" for k, v in self.items())
        acc = "" if self.accuracy is None else \
            f", accuracy {100 * self.accuracy:.2f}% (drop {100 * self.drop:.2f} points measured" + (
                "" if self.confirm_drop is None else
                f"; {100 * self.confirm_drop:.2f} + margin {100 * self.margin:.2f} on the confirmation part") + ")"
        return (f"BitPolicy({{{bits}}}, {self.size_bytes} bytes = {self.size_bytes / self.float_bytes:.3f} of "
                f"float32{acc})")

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

    def __init__(self, baseline: float, rows: list[dict[str, Any]], *, model: Any = None, X: Any = None,
                 y: Any = None, quantize_options: dict[str, Any] | None = None) -> None:
        self.baseline = baseline
        self.rows = rows
        # what suggest_bits needs to measure combined policies (the validation split the table was made on)
        self._model, self._X, self._y = model, X, y
        self.quantize_options = dict(quantize_options or {})

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

    def single_layer_bits(self, max_drop: float = 0.005) -> dict[str, int | None]:
        """Fewest bits per layer whose drop *measured alone* is <= ``max_drop`` (None = keep float). Drops of
        several layers add up, so this is a starting point, not a policy: use :meth:`suggest_bits`."""
        out: dict[str, int | None] = {}
        for layer in self.layers():
            ok = [r["value"] for r in self.rows if r["layer"] == layer and r["kind"] == "bits"
                  and r["drop"] <= max_drop]
            out[layer] = min(ok) if ok else None
        return out

    def suggest_bits(self, max_drop: float | None = 0.005, *, budget_bytes: int | None = None,
                     measure: bool = True, confidence: float = 0.95, holdout: int | None = None,
                     confirm: float = 0.5) -> BitPolicy:
        """A mixed-precision policy under a budget (see the module docstring for the greedy search).

        Parameters
        ----------
        max_drop : tolerated accuracy drop of the combined model (fraction: 0.005 = 0.5 points), measured on
            the table's validation split after every step; None = no accuracy constraint.
        budget_bytes : optional size budget for the weights (see :class:`BitPolicy` for how size is counted).
        measure : False = add up single-layer drops instead of measuring (fast, optimistic).
        confidence : a step is kept only if ``drop + margin <= max_drop`` (module docstring: the margin is the
            one-sided ``confidence`` bound of the paired difference's sampling error on the validation split and
            on a held-out split of ``holdout`` images). Without it the greedy search keeps steps whose loss
            hides in the validation noise and the choice does not carry over to new data (measured: 0.36 points
            on validation, 1.40 on the test set). 0.5 = accept on the point estimate.
        holdout : size of the held-out split the policy will be checked on (default: as large as the
            validation split); 0 = bound the expected drop on unlimited new data (a smaller margin).
        confirm : share of the validation split the greedy search never sees (a fixed random part): the final
            policy must also satisfy ``drop + margin <= max_drop`` there, else its accepted steps are undone,
            last first, until it does. A search that tries many steps keeps those whose loss the noise of its
            own images hides; the untouched part measures the result without that bias. 0 = search and
            check on the whole split.

        Returns
        -------
        BitPolicy — a dict ``{path: bits}`` for ``pfc.quantize(model, bits=policy, **table.quantize_options)``
        with ``size_bytes``, ``accuracy``, ``drop`` and the greedy ``steps``. If ``budget_bytes`` cannot be met
        within ``max_drop``, the smallest policy that keeps the drop is returned (``size_bytes`` says so).
        """
        if max_drop is None and budget_bytes is None:
            raise ValueError("suggest_bits: give max_drop (accuracy budget), budget_bytes (size budget) or both")
        if max_drop is not None and (isinstance(max_drop, bool) or not 0.0 <= float(max_drop) < 1.0):
            raise ValueError(f"max_drop must be a fraction in [0, 1) (0.005 = 0.5 points), got {max_drop!r}")
        if budget_bytes is not None and (isinstance(budget_bytes, bool) or not isinstance(budget_bytes, (int, np.integer))
                                         or budget_bytes <= 0):
            raise ValueError(f"budget_bytes must be a positive int, got {budget_bytes!r}")
        if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0.5 <= confidence < 1:
            raise ValueError(f"confidence must be in [0.5, 1), got {confidence!r}")
        if holdout is not None and (isinstance(holdout, bool) or not isinstance(holdout, (int, np.integer))
                                    or holdout < 0):
            raise ValueError(f"holdout must be a non-negative int (images in the held-out split), got {holdout!r}")
        if isinstance(confirm, bool) or not isinstance(confirm, (int, float)) or not 0 <= confirm < 1:
            raise ValueError(f"confirm must be a fraction in [0, 1), got {confirm!r}")
        if measure and self._model is None:
            raise ValueError("suggest_bits(measure=True) needs a table made by pfc.sensitivity (it keeps the model "
                             "and the validation split); pass measure=False to add up single-layer drops")
        levels = {l: sorted({int(r["value"]) for r in self.rows if r["layer"] == l and r["kind"] == "bits"},
                            reverse=True) for l in self.layers()}
        levels = {l: v for l, v in levels.items() if v}
        if not levels:
            raise ValueError("suggest_bits: the table has no bit-width rows; run sensitivity with bits=(8, 4, ...)")
        drop1 = {(r["layer"], int(r["value"])): max(0.0, r["drop"]) for r in self.rows if r["kind"] == "bits"}
        policy: dict[str, int | None] = {l: v[0] for l, v in levels.items()}
        steps: list[str] = []

        z = NormalDist().inv_cdf(confidence)
        base_ok = None
        if measure:
            from ..train.fit import predict

            base_ok = np.asarray(predict(self._model, self._X)).argmax(1) == self._y
            n = len(base_ok)
            # the search looks at one part of the validation split, the final check at the other
            order = np.random.default_rng(0).permutation(n)
            n_confirm = int(round(confirm * n))
            parts = {"search": order[n_confirm:], "confirm": order[:n_confirm] if n_confirm else order}
            new_var = 0.0 if holdout == 0 else 1.0 / (n if holdout is None else holdout)
        evaluated: dict[tuple, np.ndarray] = {}

        def changed(p: dict[str, int | None]) -> np.ndarray:
            """Paired differences d (float right, quantized wrong: 1; the reverse: -1) on the whole split."""
            key = tuple(sorted(p.items()))
            if key not in evaluated:
                from ..train.fit import predict

                ok = np.asarray(predict(quantize(self._model, bits=dict(p), **self.quantize_options), self._X)
                                ).argmax(1) == self._y
                evaluated[key] = paired_differences(base_ok, ok)
            return evaluated[key]

        def combined(p: dict[str, int | None], part: str = "search") -> tuple[float, float]:
            """(drop, margin) of the whole model quantized with policy ``p`` on one part of the split."""
            if not measure:
                return sum(drop1.get((l, b), 0.0) for l, b in p.items() if b is not None), 0.0
            d = changed(p)[parts[part]]
            return float(d.mean()), float(z * d.std() * np.sqrt(1.0 / len(d) + new_var))

        drop, margin = combined(policy)
        # the widest setting already too lossy: give the most sensitive layers back to float until it fits
        while max_drop is not None and drop + margin > max_drop and any(b is not None for b in policy.values()):
            worst = max((l for l, b in policy.items() if b is not None), key=lambda l: drop1[(l, policy[l])])
            policy[worst] = None
            drop, margin = combined(policy)
            steps.append(f"{worst}: float (the widest setting alone costs too much)")
        accepted = [dict(policy)]
        frozen: set[str] = set()
        while budget_bytes is None or self.size_bytes(policy) > budget_bytes:
            moves = []
            for l, b in policy.items():
                if l in frozen or b is None or b == levels[l][-1]:
                    continue
                nb = levels[l][levels[l].index(b) + 1]
                saved = self.size_bytes({**policy, l: b}) - self.size_bytes({**policy, l: nb})
                cost = drop1[(l, nb)] - drop1[(l, b)]
                moves.append((saved / (max(cost, 0.0) + 1e-4), l, nb))
            if not moves:
                break
            _, l, nb = max(moves)
            trial = {**policy, l: nb}
            drop, margin = combined(trial)
            note = f"drop {100 * drop:.2f} points + margin {100 * margin:.2f} on the search part"
            if max_drop is not None and drop + margin > max_drop:
                frozen.add(l)
                steps.append(f"{l}: int{nb} rejected ({note})")
                continue
            policy = trial
            accepted.append(dict(policy))
            steps.append(f"{l}: int{nb} ({note}, {self.size_bytes(policy)} bytes)")
        # final check on the part the search never looked at: undo accepted steps, last first, until it holds
        drop, margin = combined(policy, "confirm")
        while measure and max_drop is not None and confirm and drop + margin > max_drop:
            note = f"drop {100 * drop:.2f} + margin {100 * margin:.2f} points on the confirmation part"
            if len(accepted) > 1:
                accepted.pop()
                policy = dict(accepted[-1])
                steps.append(f"back off the last step ({note})")
            elif any(b is not None for b in policy.values()):
                worst = max((l for l, b in policy.items() if b is not None), key=lambda l: drop1[(l, policy[l])])
                policy[worst] = None
                steps.append(f"{worst}: float ({note})")
            else:
                break
            drop, margin = combined(policy, "confirm")
        acc = self.baseline - float(changed(policy).mean()) if measure else self.baseline - drop
        return BitPolicy(policy, size_bytes=self.size_bytes(policy), float_bytes=self.size_bytes({}),
                         accuracy=acc if measure else None, baseline=self.baseline, max_drop=max_drop,
                         budget_bytes=budget_bytes, steps=steps, margin=margin,
                         confirm_drop=drop if measure and confirm else None)

    def size_bytes(self, policy: dict[str, int | None]) -> int:
        """Bytes of the table's model under ``policy`` (see :class:`BitPolicy`); layers missing = float32."""
        if self._model is None:
            raise ValueError("size_bytes needs a table made by pfc.sensitivity (it keeps the model)")
        total = 0
        for path, layer in modules(self._model):
            flt = as_float_layer(layer)
            params = flt.params() if hasattr(flt, "params") else {}
            b = policy.get(path)
            for name, a in params.items():
                if name == "weight" and b is not None:
                    channels = a.shape[0] if a.ndim == 2 else a.shape[-1]
                    total += -(-a.size * b // 8) + FLOAT_BYTES * channels
                else:
                    total += FLOAT_BYTES * a.size
        return int(total)

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
                sparsities: Sequence[float] = DEFAULT_SPARSITIES, *,
                quantize_options: dict[str, Any] | None = None) -> SensitivityTable:
    """Accuracy per layer per setting (one layer modified at a time).

    Parameters
    ----------
    model : Chain (not modified) with Dense/Conv layers.
    X, y : validation data ``(N, *input_shape)`` and int labels ``(N,)``: a split held out from training, never
        the test set (``suggest_bits`` chooses on it; the test set then measures the choice honestly).
    bits : bit widths to try (1 = binary).
    sparsities : magnitude-pruning sparsities in [0, 1) to try per layer.
    quantize_options : keyword arguments of ``pfc.quantize`` used for every quantization row and by
        ``suggest_bits`` (default ``{"scheme": "symmetric", "granularity": "per_channel"}``; e.g. add
        ``calibration=Xcal, weight_clip="mse"``).

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
    if quantize_options is not None and (not isinstance(quantize_options, dict) or "bits" in quantize_options):
        raise ValueError(f"quantize_options must be a dict of pfc.quantize keyword arguments other than bits, "
                         f"got {quantize_options!r}")
    options = {"scheme": "symmetric", "granularity": "per_channel", **(quantize_options or {})}
    targets = [(p, l) for p, l in modules(model) if quantized_class(as_float_layer(l)) is not None]
    if not targets:
        raise ValueError("model has no Dense/Conv/CrossCor layer to analyse")

    baseline = accuracy(model, X, y)
    rows: list[dict[str, Any]] = []
    for path, layer in targets:
        for b in bits:
            acc = accuracy(quantize(model, bits={path: b}, **options), X, y)
            rows.append({"layer": path, "type": repr(as_float_layer(layer)), "kind": "bits", "value": b,
                         "setting": "binary" if b == 1 else f"int{b}", "accuracy": acc, "drop": baseline - acc})
        for s in sparsities:
            acc = accuracy(_prune_one(model, path, s), X, y)
            rows.append({"layer": path, "type": repr(as_float_layer(layer)), "kind": "sparsity", "value": s,
                         "setting": f"{100 * s:g}%", "accuracy": acc, "drop": baseline - acc})
    return SensitivityTable(baseline, rows, model=model, X=X, y=y, quantize_options=options)
