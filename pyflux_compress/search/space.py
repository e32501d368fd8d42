"""The per-layer search space of :func:`pfc.autocompress` and how a policy becomes a compressed model.

A *space* is a JSON-friendly dict (stored with the study so a resumed search samples the same ranges)::

    {"techniques": [...], "coding": ["share", "quantize", "float"], "structured_hi": 0.5,
     "layers": [{"path": "layers[1]", "type": "Dense(784 => 300, relu)", "dense": True, "shape": [300, 784],
                 "s_hi": 0.97, "qbits_lo": 3, "sbits_lo": 2, "rank_hi": 98}, ...],
     "seed_params": {...}}

A *policy* is what one trial decided::

    {"structured": 0.25, "coding": "share",
     "layers": {"layers[1]": {"form": "sparse", "sparsity": 0.93, "rank": None, "bits": 4}, ...}}

Everything here goes through the public API (``pfc.prune``, ``pfc.prune_structured``, ``pfc.lowrank``,
``pfc.quantize``, ``pfc.share_weights``, ``pfc.sensitivity``, ``pfc.fit``), never through another module's
internals, so the codec / quantization / registry rewrites underneath do not change this file.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from ..compression.lowrank import lowrank
from ..compression.prune import PolynomialDecay, prune
from ..compression.quantize import quantize
from ..compression.sensitivity import sensitivity
from ..compression.sharing import share_weights
from ..compression.structured import prune_structured
from ..model.walk import modules
from ..train.fit import accuracy, fit
from ..train.optimisers import Adam

TECHNIQUES = ("prune", "structured", "quantize", "share", "lowrank")
# settings pfc.sensitivity measures per layer (one layer changed at a time, no fine-tuning)
SENS_BITS = (8, 6, 4, 3, 2)
SENS_SPARSITIES = (0.5, 0.75, 0.9, 0.95, 0.98)
STRUCTURED_LEVELS = (0.25, 0.5, 0.75)
MAX_SPARSITY = 0.995
# the rungs s_hi climbs: the measured sparsities, then the ceiling
SPARSITY_LADDER = SENS_SPARSITIES + (MAX_SPARSITY,)
SCHEDULES = ("oneshot", "gradual")
PRUNING_EVENTS = 30  # pruning steps of a gradual schedule (Zhu & Gupta prune every ~100 of a few thousand steps)


def weighted_layers(model: Any) -> list[tuple[str, Any]]:
    """``(path, layer)`` of every leaf with a compressible weight (Dense / Conv / CrossCor)."""
    return [(p, l) for p, l in modules(model) if "weight" in getattr(l, "compressible", ())
            and getattr(l, "weight", None) is not None]


def sensitivity_cap(max_drop: float) -> float:
    """Solo accuracy drop (fraction) beyond which a setting is left out of a layer's range.

    The drops of :func:`pfc.sensitivity` are measured *without* fine-tuning, which recovers most of them, so the
    cap is looser than the budget: ten times ``max_drop`` points, at least 5 points.
    """
    return max(0.05, 10.0 * max_drop / 100.0)


def build_space(model: Any, Xval: np.ndarray, yval: np.ndarray, techniques: tuple[str, ...],
                max_drop: float, objective: tuple[str, ...] = ("size",), warm_start: int = 1,
                schedule: str = "oneshot") -> dict[str, Any]:
    """Measure per-layer sensitivity on the validation split and derive the bounded search space.

    For a latency objective weight sharing is left out: a k-means codebook runs as float weights in onnxruntime
    (no speed-up) and the shared layers have no ONNX mapping. ``space["warm_params"]`` holds ``warm_start``
    (>= 1) distinct first trials read off the sensitivity table at budgets from ``max_drop`` up to the cap
    (geometric steps): the table measures without fine-tuning, so the looser budgets are the policies that
    fine-tuning is expected to bring back within ``max_drop``.

    A layer's sparsity bound ``s_hi`` is one rung of ``SPARSITY_LADDER`` past the highest sparsity it tolerates
    in one shot (within the cap), two rungs for ``schedule="gradual"``.
    """
    cap = sensitivity_cap(max_drop)
    past = 2 if schedule == "gradual" else 1
    layers = weighted_layers(model)
    bits = SENS_BITS if {"quantize", "share"} & set(techniques) else ()
    sparsities = SENS_SPARSITIES if "prune" in techniques else ()
    table = sensitivity(model, Xval, yval, bits=bits or (8,), sparsities=sparsities or (0.5,))
    entries = []
    budget = max_drop / 100.0
    for path, layer in layers:
        rows = [r for r in table.rows if r["layer"] == path]
        ok_s = [r["value"] for r in rows if r["kind"] == "sparsity" and r["drop"] <= cap]
        ok_b = [r["value"] for r in rows if r["kind"] == "bits" and r["drop"] <= cap]
        # past the last tolerated sparsity: fine-tuning recovers, let the search find out how much. One rung for
        # a one-shot trial; two for a gradual one, where the network re-routes while the weights go (Zhu & Gupta
        # 2017): LeNet-300-100's first layer tolerates 90% in one shot and 97% gradually (benchmarks/RESULTS.md)
        rung = SPARSITY_LADDER.index(max(ok_s)) if ok_s else -1
        s_hi = SPARSITY_LADDER[min(len(SPARSITY_LADDER) - 1, rung + past)]
        # latency: onnxruntime runs every width <= 8 on the same int8 kernels, so fewer bits only cost accuracy
        qbits_lo = 8 if "latency" in objective else min(ok_b, default=8)
        w = layer.weight
        dense = callable(getattr(layer, "factorise", None)) and w.ndim == 2  # pfc.lowrank can factorise it
        out_f, in_f = (w.shape if dense else (0, 0))
        # a rank r factorisation stores r * (in + out) weights: useful only below in*out / (in+out)
        rank_hi = int(min(out_f, in_f, (out_f * in_f) // max(1, out_f + in_f) - 1)) if dense else 0
        entries.append({"path": path, "type": repr(layer), "dense": dense, "shape": list(w.shape),
                        "s_hi": float(s_hi), "qbits_lo": int(qbits_lo),
                        # a k-means codebook fits the weights better than a uniform grid: one bit fewer
                        "sbits_lo": int(max(1, qbits_lo - 1)), "rank_hi": max(0, rank_hi)})
    structured_hi = 0.0
    if "structured" in techniques:
        base = accuracy(model, Xval, yval)
        for f in STRUCTURED_LEVELS:
            try:
                acc = accuracy(prune_structured(model, f), Xval, yval)
            except ValueError:  # a layer would lose every unit
                break
            if base - acc > cap:
                structured_hi = f  # one level past the tolerated one, as for sparsity
                break
            structured_hi = f
    codings = ("quantize",) if "latency" in objective else ("share", "quantize")
    coding = [c for c in codings if c in techniques] + ["float"]
    space = {"techniques": list(techniques), "coding": coding, "structured_hi": structured_hi,
             "layers": entries, "baseline_val_accuracy": float(table.baseline), "cap": cap}
    warm = []
    for b in warm_budgets(budget, cap, warm_start):
        sparsity, bits = table.suggest_sparsity(b), table.suggest_bits(b)
        params = seed_params(space, {p: {"sparsity": float(sparsity.get(p, 0.0)), "bits": int(bits.get(p) or 8)}
                                     for p, _ in layers})
        if params not in warm:
            warm.append(params)
    space["seed_params"], space["warm_params"] = warm[0], warm
    return space


def warm_budgets(budget: float, cap: float, n: int) -> list[float]:
    """``n`` budgets (fractions) from ``budget`` to ``cap``, geometric: ``[budget]`` for ``n == 1``."""
    if n == 1 or cap <= budget:
        return [budget]
    lo = max(budget, 1e-4)
    return [budget] + [lo * (cap / lo) ** (k / (n - 1)) for k in range(1, n)]


def _forms(space: dict[str, Any], entry: dict[str, Any]) -> list[str]:
    forms = ["sparse"]
    if "lowrank" in space["techniques"] and entry["dense"] and entry["rank_hi"] >= 1:
        forms.append("lowrank")
    return forms


def param_names(space: dict[str, Any]) -> dict[str, str]:
    """Every Optuna parameter name :func:`suggest_policy` can sample in ``space`` -> its kind (``"coding"``,
    ``"structured"``, ``"form"``, ``"density"``, ``"rank"``, ``"sbits"``, ``"qbits"``)."""
    tech = space["techniques"]
    names = {"coding": "coding"}
    if "structured" in tech and space["structured_hi"] > 0:
        names["structured"] = "structured"
    for e in space["layers"]:
        p = e["path"]
        forms = _forms(space, e)
        if len(forms) > 1:
            names[f"{p}.form"], names[f"{p}.rank"] = "form", "rank"
        if "prune" in tech:
            names[f"{p}.density"] = "density"
        for c, v in (("share", "sbits"), ("quantize", "qbits")):
            if c in space["coding"]:
                names[f"{p}.{v}"] = v
    return names


def seed_params(space: dict[str, Any], seed_layers: dict[str, Any]) -> dict[str, Any]:
    """Optuna parameters of the first trial: ``suggest_sparsity`` / ``suggest_bits`` of the sensitivity table."""
    params: dict[str, Any] = {"coding": space["coding"][0]}
    if "structured" in space["techniques"]:
        params["structured"] = 0.0
    for e in space["layers"]:
        p = e["path"]
        if len(_forms(space, e)) > 1:
            params[f"{p}.form"] = "sparse"
        if "prune" in space["techniques"]:
            params[f"{p}.density"] = 1.0 - min(e["s_hi"], round(seed_layers[p]["sparsity"], 3))
        if params["coding"] == "share":
            params[f"{p}.sbits"] = max(e["sbits_lo"], min(8, seed_layers[p]["bits"]))
        elif params["coding"] == "quantize":
            params[f"{p}.qbits"] = max(e["qbits_lo"], min(8, seed_layers[p]["bits"]))
    return params


def suggest_policy(trial: Any, space: dict[str, Any]) -> dict[str, Any]:
    """Sample one policy with an Optuna ``trial`` (parameter names: ``<path>.<variable>``; a layer's sparsity is
    sampled as ``<path>.density`` = 1 - sparsity, log-uniform in ``[1 - s_hi, 1]``)."""
    tech = space["techniques"]
    coding = trial.suggest_categorical("coding", space["coding"])
    structured = 0.0
    if "structured" in tech and space["structured_hi"] > 0:
        structured = trial.suggest_float("structured", 0.0, space["structured_hi"], step=0.05)
    layers: dict[str, Any] = {}
    for e in space["layers"]:
        p = e["path"]
        forms = _forms(space, e)
        form = trial.suggest_categorical(f"{p}.form", forms) if len(forms) > 1 else forms[0]
        sparsity, rank, bits = 0.0, None, None
        if form == "lowrank":
            rank = trial.suggest_int(f"{p}.rank", 1, e["rank_hi"], log=True)
        elif "prune" in tech:
            # the fraction kept, on a log scale: a sparse layer's bytes scale with it, so 90% -> 95% sparse (half
            # the bytes) is as big a step as 0% -> 50%, and the high sparsities a size search lives in are not
            # squeezed into the last few percent of a linear range
            density = trial.suggest_float(f"{p}.density", 1.0 - e["s_hi"], 1.0, log=True)
            sparsity = round(1.0 - density, 4)
        if coding == "share":
            bits = trial.suggest_int(f"{p}.sbits", e["sbits_lo"], 8)
        elif coding == "quantize":
            bits = trial.suggest_int(f"{p}.qbits", e["qbits_lo"], 8)
        layers[p] = {"form": form, "sparsity": float(sparsity), "rank": rank, "bits": bits}
    return {"structured": float(structured), "coding": coding, "layers": layers}


class _Schedules:
    """Several per-layer :class:`PolynomialDecay` schedules as the single ``pruning=`` hook of ``pfc.fit``."""

    def __init__(self, schedules: list[PolynomialDecay]) -> None:
        self.schedules = schedules

    def on_step(self, model: Any, step: int) -> None:
        for s in self.schedules:
            s.on_step(model, step)


def apply_policy(model: Any, policy: dict[str, Any], X: np.ndarray, y: np.ndarray, *, finetune_epochs: int,
                 seed: int, calibrate: bool, lr: float = 5e-4, batchsize: int = 128, schedule: str = "oneshot",
                 prune_epochs: int = 0, share_epochs: int = 1, weight_decay: float = 0.0,
                 report: Callable[[int, Any], None] | None = None) -> Any:
    """Compress ``model`` as ``policy`` says and fine-tune on ``(X, y)``; returns the new model.

    Order: structured pruning (removes units; paths unchanged) -> low-rank factorisation of the layers whose form
    is ``"lowrank"`` -> per-layer magnitude pruning -> fine-tuning with the masks held -> weight sharing (then
    centroid fine-tuning) or quantization (``calibrate``: activation ranges from 256 training samples, which the
    ONNX export turns into integer kernels).

    ``schedule="oneshot"`` prunes each layer to its sparsity at once, then fine-tunes ``finetune_epochs`` epochs
    (Adam ``lr``). ``schedule="gradual"`` trains ``prune_epochs`` epochs (Adam ``lr``) while one
    ``pfc.PolynomialDecay`` per layer raises its sparsity from 0 to the policy's (reached after 5/6 of the
    steps, ~30 pruning events), then fine-tunes ``finetune_epochs`` epochs at ``lr / 5`` with the masks held.
    ``weight_decay``: coupled L2 of those optimisers. Weight sharing is followed by ``share_epochs`` epochs of
    centroid fine-tuning at ``lr / 5`` (when any fine-tuning is asked for). ``report(stage, model)`` is called
    after the gradual pruning phase (stage 0) and after fine-tuning (stage 1), e.g. to stop a hopeless Optuna
    trial early; it may raise.
    """
    m = model
    if policy["structured"] > 0:
        m = prune_structured(m, policy["structured"])
    per = policy["layers"]
    ranks = {}
    for p, l in weighted_layers(m):
        rule = per.get(p)
        if rule and rule["form"] == "lowrank" and rule["rank"]:
            ranks[p] = int(min(rule["rank"], *l.weight.shape))
    before = m
    m = lowrank(m, rank=ranks) if ranks else m.copy()
    targets = paths_after_lowrank(before, m, ranks)  # original path -> the path(s) it became
    sparsity = {q: rule["sparsity"] for p, rule in per.items() if rule["form"] == "sparse" and rule["sparsity"] > 0
                for q in targets[p]}
    fit_kw = {"batchsize": batchsize, "progress": False}
    finetune_lr = lr
    gradual = schedule == "gradual" and prune_epochs > 0
    if gradual and sparsity:
        steps = prune_epochs * math.ceil(len(X) / batchsize)
        end = max(1, steps - steps // 6)  # the last sixth trains at the final sparsity
        every = max(1, end // PRUNING_EVENTS)
        hook = _Schedules([PolynomialDecay(0.0, s, begin=0, end=end, frequency=every, include=q)
                           for q, s in sparsity.items()])
        fit(m, X, y, epochs=prune_epochs, opt=Adam(lr, weight_decay=weight_decay), pruning=hook, seed=seed,
            **fit_kw)
        finetune_lr = lr / 5
        if report is not None:
            report(0, m)
    else:
        for q, s in sparsity.items():
            m = prune(m, s, include=q)
    if finetune_epochs > 0:
        fit(m, X, y, epochs=finetune_epochs, opt=Adam(finetune_lr, weight_decay=weight_decay), seed=seed, **fit_kw)
        if report is not None:
            report(1, m)
    bits = {q: rule["bits"] for p, rule in per.items() if rule["bits"] for q in targets[p]}
    if policy["coding"] == "share" and bits:
        m = share_weights(m, bits=bits)
        if share_epochs > 0 and (finetune_epochs > 0 or gradual):  # no fine-tuning asked: none here either
            fit(m, X, y, epochs=share_epochs, opt=Adam(lr / 5), seed=seed + 1, **fit_kw)
    elif policy["coding"] == "quantize" and bits:
        m = quantize(m, bits=bits, scheme="affine", granularity="per_channel",
                     calibration=X[:256] if calibrate else None)
    return m


def paths_after_lowrank(before: Any, after: Any, ranks: dict[str, int]) -> dict[str, list[str]]:
    """Weighted-layer path in ``before`` -> its path(s) in ``after = lowrank(before, rank=ranks)``.

    ``lowrank`` replaces a factorised layer by two leaves inline, so leaves keep their order: map by position in
    ``pfc.modules``. Layers that ``lowrank`` skipped (no parameter saving) stay one leaf.
    """
    skipped = set(after.records[-1].get("skipped", {})) if ranks else set()
    weighted = {p for p, _ in weighted_layers(before)}
    new = [p for p, _ in modules(after)]
    out: dict[str, list[str]] = {}
    i = 0
    for p, _ in modules(before):
        n = 2 if p in ranks and p not in skipped else 1
        if p in weighted:
            out[p] = new[i:i + n]
        i += n
    return out
