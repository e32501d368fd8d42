"""``pfc.autocompress``: an Optuna search over per-layer compression policies, in-process or on a Dask cluster.

Optuna and Dask are imported inside the functions (the ``[search]`` extra): ``import pyflux_compress`` stays
light. See docs/search.md for the decision variables, the objectives and how to run on a cluster.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from typing import Any, Sequence

import numpy as np

from .._validate import check_fraction, check_in, check_int, check_positive
from ..compression.archive import size_report
from ..compression.sensitivity import paired_differences
from ..deploy.predictor import Predictor
from ..model.walk import modules
from ..threads import resolve as resolve_threads
from ..threads import use as engine_threads
from ..train.fit import accuracy, predict
from .space import MAX_SPARSITY, SCHEDULES, TECHNIQUES, apply_policy, build_space, param_names, suggest_policy

OBJECTIVES = ("size", "latency", ("size", "accuracy"), ("latency", "accuracy"))
STATE_KEYS = ("COMPLETE", "FAIL", "PRUNED", "RUNNING", "WAITING")


# ----------------------------------------------------------------------------------------------- validation
def _check_objective(objective: Any) -> tuple[str, ...]:
    obj = tuple(objective) if isinstance(objective, (list, tuple)) else objective
    check_in("objective", obj, OBJECTIVES)
    return (obj,) if isinstance(obj, str) else obj


def _check_techniques(techniques: Any) -> tuple[str, ...]:
    if isinstance(techniques, str) or not isinstance(techniques, (list, tuple)) or not techniques:
        raise ValueError(f"techniques must be a non-empty tuple of {', '.join(map(repr, TECHNIQUES))}; "
                         f"got {techniques!r}")
    for t in techniques:
        check_in("techniques entry", t, TECHNIQUES)
    return tuple(dict.fromkeys(techniques))


def _check_storage(storage: Any) -> Any:
    if storage is None or isinstance(storage, str) and storage.startswith(("sqlite:///", "postgresql", "mysql")):
        return storage
    if isinstance(storage, (str, os.PathLike)) and str(storage):
        return os.fspath(storage)  # a journal file
    raise ValueError(f"storage must be None, an RDB URL such as 'sqlite:///study.db', or a journal file path; "
                     f"got {storage!r}")


def _check_executor(executor: Any) -> Any:
    if executor is None or isinstance(executor, str) and "://" in executor:
        return executor
    if type(executor).__name__ == "Client" and hasattr(executor, "submit"):
        return executor
    raise ValueError(f"executor must be None (in-process), a dask.distributed.Client, or a scheduler address such "
                     f"as 'tcp://127.0.0.1:8786'; got {executor!r}")


def _check_enqueue(enqueue: Any) -> list[dict[str, Any]]:
    if isinstance(enqueue, dict) or not isinstance(enqueue, (list, tuple)):
        raise ValueError(f"enqueue must be a list of dicts of Optuna parameters such as "
                         f"[{{'layers[1].sparsity': 0.95, 'coding': 'share'}}]; got {enqueue!r}")
    for i, params in enumerate(enqueue):
        if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
            raise ValueError(f"enqueue[{i}] must be a dict of Optuna parameters; got {params!r}")
    return [dict(p) for p in enqueue]


def _check_params(what: str, params: dict[str, Any], names: dict[str, str]) -> None:
    """Parameter names must exist in the search space; values must be in the variable's domain."""
    for k, v in params.items():
        if k not in names:
            raise ValueError(f"{what}: unknown parameter {k!r}; this search space has {', '.join(sorted(names))}")
        kind = names[k]
        ok = {"density": lambda: isinstance(v, (int, float)) and 1.0 - MAX_SPARSITY <= v <= 1.0,
              "structured": lambda: isinstance(v, (int, float)) and 0.0 <= v < 1.0,
              "sbits": lambda: isinstance(v, int) and 1 <= v <= 8,
              "qbits": lambda: isinstance(v, int) and 1 <= v <= 8,
              "rank": lambda: isinstance(v, int) and v >= 1,
              "form": lambda: v in ("sparse", "lowrank"),
              "coding": lambda: v in ("share", "quantize", "float")}[kind]()
        if not ok:
            raise ValueError(f"{what}: {k}={v!r} is outside the domain of a {kind!r} variable")


def _as_density(what: str, params: dict[str, Any]) -> dict[str, Any]:
    """``<path>.sparsity: s`` (the readable way to enqueue) as the sampled parameter ``<path>.density: 1 - s``."""
    out = {}
    for k, v in params.items():
        if k.endswith(".sparsity"):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= MAX_SPARSITY:
                raise ValueError(f"{what}: {k}={v!r} is outside the domain of a 'sparsity' variable "
                                 f"[0, {MAX_SPARSITY}]")
            k, v = k[:-len("sparsity")] + "density", 1.0 - float(v)
        out[k] = v
    return out


def _check_data(model: Any, X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    if not hasattr(model, "layers"):
        raise ValueError(f"model must be a Chain, got {type(model).__name__}")
    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y)
    if X.ndim < 2 or len(X) < 20:
        raise ValueError(f"X must be (N, *input_shape) with N >= 20 samples; got shape {X.shape}")
    if y.shape != (len(X),) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"y must be integer class labels of shape ({len(X)},); got {y.dtype} {y.shape}")
    return X, y


def validation_split(X: np.ndarray, y: np.ndarray, validation: float = 0.1, seed: int = 0):
    """The split :func:`autocompress` carves: ``(Xtrain, ytrain, Xval, yval)`` (seeded permutation).

    Train the baseline on ``Xtrain`` only to keep the validation split unseen by the model being compressed.
    """
    idx = np.random.default_rng(seed).permutation(len(X))
    n_val = max(10, int(round(validation * len(X))))
    va, tr = idx[:n_val], idx[n_val:]
    return X[tr], y[tr], X[va], y[va]


# ------------------------------------------------------------------------------------------------ one trial
class TrialRunner:
    """The Optuna objective: sample a policy, build and fine-tune the model, measure it (picklable for Dask)."""

    def __init__(self, model: Any, data: tuple, space: dict[str, Any], config: dict[str, Any]) -> None:
        self.model, self.data, self.space, self.config = model, data, space, config

    def build(self, policy: dict[str, Any], report: Any = None) -> Any:
        Xtr, ytr, _, _ = self.data
        c = self.config
        return apply_policy(self.model, policy, Xtr, ytr, finetune_epochs=c["finetune_epochs"], seed=c["seed"],
                            calibrate="latency" in c["objective"], schedule=c["schedule"],
                            prune_epochs=c["prune_epochs"], share_epochs=c["share_epochs"], lr=c["lr"],
                            weight_decay=c["weight_decay"], report=report)

    def reporter(self, trial: Any) -> Any:
        """``report(stage, model)`` for :func:`apply_policy`: the validation drop after each training phase as
        an Optuna intermediate value; raises ``optuna.TrialPruned`` when the study's pruner says so. None
        without ``prune_margin``."""
        if self.config["prune_margin"] is None:
            return None
        import optuna

        _, _, Xval, yval = self.data
        base = self.config["base_accuracy"]

        def report(stage: int, model: Any) -> None:
            drop = 100.0 * (base - accuracy(model, Xval, yval))
            trial.report(drop, stage)
            trial.set_user_attr(f"drop_stage{stage}", drop)
            if trial.should_prune():
                raise optuna.TrialPruned(f"validation drop {drop:.2f} points after phase {stage}")

        return report

    def measure(self, model: Any) -> dict[str, Any]:
        _, _, Xval, yval = self.data
        c = self.config
        correct = predict(model, Xval).argmax(-1) == yval
        acc = float(correct.mean())
        out = {"val_accuracy": acc, "drop": 100.0 * (c["base_accuracy"] - acc),
               "drop_se": paired_drop_se(c["base_correct"], correct), "archive_bytes": None, "latency_ms": None}
        if "size" in c["objective"]:
            out["archive_bytes"] = int(size_report(model)["archive"])
        if "latency" in c["objective"]:
            out["latency_ms"] = measure_latency(model, c["batch_size"], c["threads"], c["latency_seconds"])
        return out

    def __call__(self, trial: Any) -> Any:
        start = time.perf_counter()
        policy = suggest_policy(trial, self.space)
        trial.set_user_attr("policy", policy)  # before the work: a pruned trial's record keeps its policy
        trial.set_user_attr("pid", os.getpid())
        trial.set_user_attr("worker", _worker_address())
        with engine_threads(self.config["engine_threads"]):
            model = self.build(policy, self.reporter(trial))
            m = self.measure(model)
        trial.set_user_attr("seconds", time.perf_counter() - start)
        for k, v in m.items():
            trial.set_user_attr(k, v)
        # Optuna's constrained TPE / NSGA-II: feasible when <= 0, i.e. the validation drop (plus z standard errors
        # with a confidence) is within max_drop
        trial.set_constraint("max_drop", drop_bound(m, self.config["z"]) - self.config["max_drop"])
        values = [_objective_value(name, m) for name in self.config["objective"]]
        return values[0] if len(values) == 1 else tuple(values)


def drop_bound(record: dict[str, Any], z: float) -> float:
    """The drop a budget is checked against: ``drop + z * drop_se`` (points; ``z = 0``: the measured drop)."""
    return float(record["drop"]) + (z * float(record["drop_se"]) if z and record.get("drop_se") is not None else 0.0)


def within_budget(record: dict[str, Any], z: float, max_drop: float) -> bool:
    """Whether a trial's record is complete and meets the budget: ``drop (+ z drop_se) <= max_drop``."""
    return record["state"] == "COMPLETE" and drop_bound(record, z) <= max_drop


def paired_drop_se(base_correct: np.ndarray, correct: np.ndarray) -> float:
    """Standard error (points) of a validation drop: both models are scored on the same images, so the drop is
    the mean of the per-image differences ``base_correct - correct`` (each -1, 0 or 1) and its standard error
    is their standard deviation over ``sqrt(n)``. Only the images the two models disagree on count: a 0.1-point
    drop on 6,000 images, with 60 disagreements, is 0.1 +- 0.13 points."""
    d = paired_differences(base_correct, correct)
    return float(100.0 * d.std() / np.sqrt(len(d)))


def _objective_value(name: str, m: dict[str, Any]) -> float:
    return {"size": lambda: float(m["archive_bytes"]), "latency": lambda: float(m["latency_ms"]),
            "accuracy": lambda: 100.0 * (1.0 - m["val_accuracy"])}[name]()


def _worker_address() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return "local"


def measure_latency(model: Any, batch_size: int, threads: int | None, seconds: float) -> float:
    """Median onnxruntime latency (ms per call) of ``model``'s exported graph at ``batch_size``, ``threads``."""
    return float(Predictor(model, threads=threads).benchmark([batch_size], seconds=seconds)[batch_size].p50_ms)


# ------------------------------------------------------------------------------------------------ the result
class SearchResult:
    """What :func:`autocompress` found.

    Attributes
    ----------
    best_model : Chain / QuantizedChain or None — the best feasible policy rebuilt (same seed) in this process.
    best : dict or None — that trial's record. ``front`` : list of records — the Pareto front of the feasible
    trials over ``objective`` (one record for a single objective). ``trials`` : every trial's record: ``number``,
    ``state``, ``values``, ``policy`` (per layer), measurements (``val_accuracy``, ``drop`` in points and its paired
    standard error ``drop_se`` (:func:`paired_drop_se`),
    ``archive_bytes``, ``latency_ms``), ``worker``, ``pid``, ``seconds``. ``baseline`` : the uncompressed model's
    measurements. ``test`` : test-set accuracy of the baseline and best model (only when ``test=`` was given).
    ``records`` : the best model's compression records. ``study_name``, ``storage``, ``wall_seconds``.
    """

    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)

    def feasible(self, record: dict[str, Any]) -> bool:
        """Whether a complete trial's record meets the budget: ``drop (+ z drop_se) <= max_drop``."""
        return within_budget(record, _z(self.confidence), self.max_drop)

    @property
    def n_complete(self) -> int:
        return sum(t["state"] == "COMPLETE" for t in self.trials)

    def ratio(self, record: dict[str, Any] | None = None) -> float | None:
        """fp32 dense bytes / archive bytes of ``record`` (default: the best trial)."""
        r = self.best if record is None else record
        if not r or not r.get("archive_bytes"):
            return None
        return self.baseline["fp32_dense"] / r["archive_bytes"]

    def front_table(self) -> str:
        lines = [f"{'trial':>5} {'val acc':>8} {'drop':>7} {'archive B':>10} {'ratio':>7} {'latency ms':>10}"]
        for r in sorted(self.front, key=lambda r: r["values"]):
            ratio = self.ratio(r)
            lat = f"{r['latency_ms']:.3f}" if r["latency_ms"] else "-"
            lines.append(f"{r['number']:>5} {100 * r['val_accuracy']:>7.2f}% {r['drop']:>6.2f}p "
                         f"{r['archive_bytes'] or '-':>10} {f'{ratio:.1f}x' if ratio else '-':>7} {lat:>10}")
        return "\n".join(lines)

    def to_json(self, path: str | os.PathLike) -> None:
        """Write the baseline, best trial, front and every trial record as JSON (atomically)."""
        from .._files import jsonable, write_atomic

        keep = {k: getattr(self, k) for k in ("study_name", "objective", "max_drop", "confidence", "baseline", "best",
                                               "test", "front", "trials", "wall_seconds", "space")}
        write_atomic(path, json.dumps(jsonable(keep), indent=1))

    def plot(self, path: str | os.PathLike) -> None:
        """PNG of every complete trial (grey), the feasible ones (blue) and the Pareto front (red line):
        archive bytes (or latency) against validation accuracy drop, the budget as a dashed line."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        key, label = (("archive_bytes", "archive bytes (log)") if "size" in self.objective
                      else ("latency_ms", "onnxruntime latency, ms per batch (log)"))
        done = [t for t in self.trials if t["state"] == "COMPLETE" and t.get(key)]
        fig, ax = plt.subplots(figsize=(6.4, 4.4))
        ax.scatter([t[key] for t in done], [t["drop"] for t in done], s=14, c="0.6", label="trials")
        ok = [t for t in done if self.feasible(t)]
        ax.scatter([t[key] for t in ok], [t["drop"] for t in ok], s=18, c="tab:blue", label="within budget")
        front = sorted(_pareto([{**t, "values": [t[key], t["drop"]]} for t in ok]), key=lambda t: t[key])
        ax.plot([t[key] for t in front], [t["drop"] for t in front], "o-", c="tab:red", label="Pareto front")
        ax.axhline(self.max_drop, ls="--", c="k", lw=0.8, label=f"max_drop {self.max_drop} points")
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("validation accuracy drop (points)")
        ax.set_title(f"autocompress: {len(done)} trials, {'/'.join(self.objective)}")
        ax.legend(fontsize=8)
        fig.tight_layout()
        from .._files import atomic_write

        with atomic_write(path) as fh:
            fig.savefig(fh, format="png", dpi=110)
        plt.close(fig)

    def __repr__(self) -> str:
        states = {s: sum(t["state"] == s for t in self.trials) for s in STATE_KEYS}
        head = (f"SearchResult(objective={'/'.join(self.objective)}, max_drop={self.max_drop} points"
                + (f" at {self.confidence:.0%} confidence" if self.confidence else "") + ", "
                f"{self.n_complete} complete / {len(self.trials)} trials "
                f"({', '.join(f'{v} {k.lower()}' for k, v in states.items() if v and k != 'COMPLETE') or 'no failures'})"
                f", {self.wall_seconds:.0f} s, study {self.study_name!r})")
        if not self.best:
            return head + "\n  no trial met the accuracy budget"
        b = self.best
        lines = [head, f"  baseline: val accuracy {100 * self.baseline['val_accuracy']:.2f}%, "
                       f"{self.baseline['fp32_dense']:,d} B fp32"
                       + (f", {self.baseline['latency_ms']:.3f} ms" if self.baseline.get("latency_ms") else ""),
                 f"  best: trial {b['number']}, val drop {b['drop']:.2f}"
                 + (f" +- {b['drop_se']:.2f}" if b.get("drop_se") is not None else "") + " points"
                 + (f", {b['archive_bytes']:,d} B ({self.ratio():.1f}x)" if b.get("archive_bytes") else "")
                 + (f", {b['latency_ms']:.3f} ms ({self.baseline['latency_ms'] / b['latency_ms']:.2f}x faster)"
                    if b.get("latency_ms") and self.baseline.get("latency_ms") else "")]
        if self.test:
            lines.append(f"  test accuracy: baseline {100 * self.test['baseline']:.2f}%, best "
                         f"{100 * self.test['best']:.2f}%")
        lines.append("  policy: " + describe_policy(b["policy"]))
        return "\n".join(lines)


def describe_policy(policy: dict[str, Any]) -> str:
    """One line per policy: ``structured 25%, share; layers[1] 93% sparse 4b; layers[2] rank 12 5b``."""
    parts = [f"structured {100 * policy['structured']:.0f}%", policy["coding"]]
    for p, r in policy["layers"].items():
        what = f"rank {r['rank']}" if r["form"] == "lowrank" else f"{100 * r['sparsity']:.1f}% sparse"
        parts.append(f"{p} {what}" + (f" {r['bits']}b" if r["bits"] else ""))
    return "; ".join(parts)


# ------------------------------------------------------------------------------------------------ the search
def _sampler(objective: tuple[str, ...], seed: int, trials: int, distributed: bool) -> Any:
    import optuna

    if len(objective) == 1:
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, trials // 5)), multivariate=True,
                                          constant_liar=distributed)
    return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(20, trials // 4)))


def _pruner(config: dict[str, Any]) -> Any:
    """Optuna's ThresholdPruner on the intermediate validation drop: a trial whose drop after a training phase
    exceeds ``max_drop + prune_margin`` points stops there (None: no pruning)."""
    import optuna

    if config["prune_margin"] is None:
        return optuna.pruners.NopPruner()
    return optuna.pruners.ThresholdPruner(upper=config["max_drop"] + config["prune_margin"])


def _storage(storage: Any) -> Any:
    """Optuna storage for ``storage``: None (in memory), an RDB URL, or a journal file path."""
    if storage is None or "://" in storage:
        return storage
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(storage))


def _study_name(model: Any, objective: tuple[str, ...], techniques: tuple[str, ...], max_drop: float,
                seed: int, recipe: dict[str, Any]) -> str:
    h = hashlib.sha1(json.dumps([str(model), objective, techniques, max_drop, seed, recipe], sort_keys=True).encode())
    for _, layer in modules(model):  # the weights too: another training run of the same architecture is
        for arr in layer.params().values():  # another study
            h.update(np.ascontiguousarray(arr).tobytes())
    return "pfc-autocompress-" + h.hexdigest()[:12]


def _run_on_worker(runner: Any, storage: Any, study_name: str, objective: tuple[str, ...], seed: int,
                   trials: int) -> int:
    """Dask task: one trial of the shared study (its own sampler seed, so workers do not repeat each other)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    study = optuna.load_study(study_name=study_name, storage=storage,
                              sampler=_sampler(objective, seed, trials, distributed=True), pruner=_pruner(runner.config))
    study.optimize(runner, n_trials=1, catch=(ValueError, np.linalg.LinAlgError))
    return study.trials[-1].number if study.trials else -1


def _fail_stale(study: Any) -> int:
    """Mark trials left RUNNING by an interrupted search (or a dead worker) as FAIL; returns how many."""
    from optuna.trial import TrialState

    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)  # optuna's storage API
        n += 1
    return n


def autocompress(model: Any, X: Any, y: Any, *, max_drop: float = 0.5, objective: Any = "size",
                 techniques: Sequence[str] = TECHNIQUES, trials: int = 50, timeout: float | None = None,
                 finetune_epochs: int = 2, validation: float = 0.1, seed: int = 0, executor: Any = None,
                 storage: Any = None, threads: int | None = None, batch_size: int = 256,
                 latency_seconds: float = 0.5, test: tuple[Any, Any] | None = None, study_name: str | None = None,
                 progress: bool = True, schedule: str = "oneshot", prune_epochs: int = 4, share_epochs: int = 1,
                 lr: float = 5e-4, weight_decay: float = 0.0, prune_margin: float | None = None,
                 confidence: float | None = None,
                 warm_start: int = 1, enqueue: Sequence[dict[str, Any]] = ()) -> SearchResult:
    """Search per-layer compression policies with Optuna under an accuracy budget.

    Parameters
    ----------
    model : trained Chain (not modified). X, y : training inputs ``(N, *input_shape)`` and int labels ``(N,)``;
        a seeded ``validation`` fraction is carved out for tuning, the rest is fine-tuned on.
    max_drop : accuracy budget in percentage points (validation accuracy of the baseline minus the trial's).
    confidence : None (default: a trial meets the budget when its measured validation drop is within
        ``max_drop``) or a one-sided confidence level in (0.5, 1), e.g. 0.9: the drop plus ``z`` paired standard
        errors (``drop_se``; ``z`` = 1.28 at 0.9) must be within ``max_drop``. The best trial is the cheapest one
        at the edge of the budget, so its drop on unseen data is as likely above as below the measured one; a
        confidence leaves that margin.
    objective : ``"size"`` (archive bytes), ``"latency"`` (onnxruntime ms at ``batch_size`` with ``threads``),
        or a pair ``("size", "accuracy")`` / ``("latency", "accuracy")`` for a Pareto front (NSGA-II).
    techniques : subset of ``("prune", "structured", "quantize", "share", "lowrank")``.
    trials : number of complete trials wanted: a resumed study runs ``trials`` minus the complete ones it has
        (a trial that raises is recorded as FAIL and not repeated). timeout : stop starting trials after this
        many seconds.
    finetune_epochs : epochs of fine-tuning per trial (masks held). seed : split, sampler and fine-tuning seed.
    executor : None (in-process), a ``dask.distributed.Client``, or a scheduler address (``"tcp://host:8786"``).
    storage : None (in memory), an RDB URL (``"sqlite:///study.db"``) or a journal file path; with a storage an
        interrupted search resumes (same ``study_name``; default derived from the model, objective, techniques,
        budget and seed). With an executor the storage lives on the scheduler (optuna-integration's DaskStorage).
    threads : engine threads per trial (BLAS and the kernels' batch split, :mod:`pfc.threads`) and onnxruntime
        intra-op threads for latency. None: the cores idle when the search starts, fixed for the whole search
        (so the best policy rebuilt at the end is its trial's model bit for bit), and onnxruntime's default.
    test : optional ``(Xtest, ytest)``, touched once after the search for the final report.
    schedule : how a trial reaches its per-layer sparsity: ``"oneshot"`` (prune, then ``finetune_epochs``) or
        ``"gradual"`` (``prune_epochs`` epochs of training while ``pfc.PolynomialDecay`` raises each layer's
        sparsity, then ``finetune_epochs`` at ``lr / 5`` with the masks held). share_epochs : centroid
        fine-tuning epochs after weight sharing. lr, weight_decay : Adam learning rate and coupled L2 of the
        trial's fine-tuning.
    prune_margin : stop a trial early (Optuna ``ThresholdPruner``, state PRUNED) when its validation drop after
        the pruning or fine-tuning phase exceeds ``max_drop + prune_margin`` points; None (default) runs every
        trial to the end. Single objective only.
    warm_start : number of first trials read off the sensitivity table (budgets ``max_drop`` ... the cap,
        geometric); enqueue : more first trials, as dicts of Optuna parameters (``{"layers[1].sparsity": 0.95,
        "coding": "share", "layers[1].sbits": 5, ...}``; a sparsity is stored as the sampled ``<path>.density`` =
        1 - sparsity; missing parameters are sampled). Warm starts are added when
        the study is created, enqueued trials also when it is resumed (never twice with the same parameters).

    Returns
    -------
    SearchResult
    """
    max_drop = check_fraction("max_drop", max_drop, 0.0, 100.0)
    objective = _check_objective(objective)
    techniques = _check_techniques(techniques)
    trials = check_int("trials", trials, min=1)
    if timeout is not None:
        timeout = check_positive("timeout", timeout)
    finetune_epochs = check_int("finetune_epochs", finetune_epochs, min=0)
    validation = check_fraction("validation", validation, 0.0, 0.5, inclusive=(False, True))
    seed = check_int("seed", seed)
    executor = _check_executor(executor)
    storage = _check_storage(storage)
    if threads is not None:
        threads = check_int("threads", threads, min=1)
    batch_size = check_int("batch_size", batch_size, min=1)
    latency_seconds = check_positive("latency_seconds", latency_seconds)
    schedule = check_in("schedule", schedule, SCHEDULES)
    prune_epochs = check_int("prune_epochs", prune_epochs, min=1 if schedule == "gradual" else 0)
    share_epochs = check_int("share_epochs", share_epochs, min=0)
    lr = check_positive("lr", lr)
    weight_decay = check_fraction("weight_decay", weight_decay, 0.0, 1.0)
    if prune_margin is not None:
        prune_margin = check_fraction("prune_margin", prune_margin, 0.0, 100.0)
        if len(objective) > 1:
            raise ValueError(f"prune_margin needs a single objective (Optuna prunes single-objective trials "
                             f"only); got objective={objective!r}")
    warm_start = check_int("warm_start", warm_start, min=1)
    if confidence is not None:
        confidence = check_fraction("confidence", confidence, 0.5, 1.0, inclusive=(False, False))
    enqueue = _check_enqueue(enqueue)
    X, y = _check_data(model, X, y)
    if test is not None:
        if not isinstance(test, (tuple, list)) or len(test) != 2:
            raise ValueError("test must be a pair (Xtest, ytest)")
        test = _check_data(model, *test)
    try:
        import optuna
    except ImportError as err:  # pragma: no cover - the [search] extra
        raise ImportError("pfc.autocompress needs Optuna: pip install 'pyflux-compress[search]'") from err
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    start = time.perf_counter()
    data = validation_split(X, y, validation, seed)
    recipe = {"finetune_epochs": finetune_epochs, "schedule": schedule, "prune_epochs": prune_epochs,
              "share_epochs": share_epochs, "lr": lr, "weight_decay": weight_decay,
              "space": 2}  # 2: per-layer density sampled on a log scale (a study of another space is not resumed)
    if confidence is not None:  # the trials' constraint values depend on it
        recipe["confidence"] = confidence
    name = study_name or _study_name(model, objective, techniques, max_drop, seed, recipe)
    client = _client(executor)
    opt_storage = _storage(storage)
    if client is not None:
        from optuna_integration import DaskStorage

        with warnings.catch_warnings():  # "DaskStorage is experimental": the issue asks for exactly it
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            opt_storage = DaskStorage(storage=opt_storage, client=client)
    directions = ["minimize"] * len(objective)
    # one engine thread count for every trial and the final rebuild: the sums of a sharded batch or a threaded
    # GEMM depend on it in the last bits, and a rebuilt best model must be its trial's model
    n_threads = resolve_threads(threads)
    base_correct = predict(model, data[2], threads=n_threads).argmax(-1) == data[3]
    base = {"val_accuracy": float(base_correct.mean())}
    config = {"objective": objective, "max_drop": max_drop, "seed": seed, "threads": threads,
              "engine_threads": n_threads, "z": _z(confidence),
              "batch_size": batch_size, "latency_seconds": latency_seconds, "base_accuracy": base["val_accuracy"],
              "base_correct": base_correct,
              "prune_margin": prune_margin, **recipe}
    study = optuna.create_study(study_name=name, storage=opt_storage, directions=directions, load_if_exists=True,
                                sampler=_sampler(objective, seed, trials, client is not None),
                                pruner=_pruner(config))
    _fail_stale(study)
    space = study.user_attrs.get("space")
    if space is None:
        with engine_threads(n_threads):
            space = build_space(model, data[2], data[3], techniques, max_drop, objective, warm_start, schedule)
        study.set_user_attr("space", space)
        study.set_user_attr("model", str(model))
        for params in space.get("warm_params", [space["seed_params"]]):
            study.enqueue_trial(params, skip_if_exists=True)
    elif study.user_attrs.get("model") != str(model):
        raise ValueError(f"storage {storage!r} holds study {name!r} for another model "
                         f"({study.user_attrs.get('model')}); pass another study_name or storage")
    names = param_names(space)
    enqueue = [_as_density(f"enqueue[{i}]", params) for i, params in enumerate(enqueue)]
    for i, params in enumerate(enqueue):
        _check_params(f"enqueue[{i}]", params, names)
    for params in enqueue:  # also when resuming; a trial with the same parameters is not added twice
        study.enqueue_trial(params, skip_if_exists=True)
    runner = TrialRunner(model, data, space, config)
    done = sum(t.state.name == "COMPLETE" for t in study.trials)
    todo = max(0, trials - done)
    if todo:
        if client is None:
            _run_local(study, runner, todo, timeout, progress)
        else:
            _run_dask(client, study, runner, opt_storage, name, objective, seed, trials, todo, timeout, progress)
    _fail_stale(study)  # a trial whose worker died (its task was retried elsewhere as a new trial)

    rep = size_report(model)
    base.update(fp32_dense=int(rep["fp32_dense"]), archive_bytes=int(rep["archive"]), latency_ms=None)
    if "latency" in objective:
        base["latency_ms"] = measure_latency(model, batch_size, threads, latency_seconds)
    records = [_record(t) for t in study.trials]
    feasible = [r for r in records if within_budget(r, config["z"], max_drop)]
    front = _pareto(feasible)
    best = min(feasible, key=lambda r: r["values"][0]) if feasible else None
    best_model = None
    if best is not None:
        with engine_threads(n_threads):
            best_model = runner.build(best["policy"])
    result_test = None
    if test is not None:  # the only use of the test set
        result_test = {"baseline": accuracy(model, *test),
                       "best": accuracy(best_model, *test) if best_model is not None else None}
    return SearchResult(best_model=best_model, best=best, front=front, trials=records, baseline=base,
                        test=result_test, records=list(getattr(best_model, "records", [])), study_name=name,
                        storage=storage, objective=objective, max_drop=max_drop, confidence=confidence, space=space,
                        wall_seconds=time.perf_counter() - start)


def _z(confidence: float | None) -> float:
    """Standard normal quantile of a one-sided ``confidence`` (0 for None)."""
    from statistics import NormalDist

    return NormalDist().inv_cdf(confidence) if confidence else 0.0


def _client(executor: Any) -> Any:
    if executor is None or not isinstance(executor, str):
        return executor
    from distributed import Client

    return Client(executor)


def _record(t: Any) -> dict[str, Any]:
    a = t.user_attrs
    return {"number": t.number, "state": t.state.name, "values": list(t.values) if t.values else None,
            "params": dict(t.params), "policy": a.get("policy"), "val_accuracy": a.get("val_accuracy"),
            "drop": a.get("drop"), "drop_se": a.get("drop_se"), "archive_bytes": a.get("archive_bytes"),
            "latency_ms": a.get("latency_ms"),
            "worker": a.get("worker"), "pid": a.get("pid"), "seconds": a.get("seconds")}


def _pareto(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Non-dominated records (all objective values minimised)."""
    out = []
    for r in records:
        v = np.asarray(r["values"])
        if not any(np.all(np.asarray(o["values"]) <= v) and np.any(np.asarray(o["values"]) < v) for o in records):
            out.append(r)
    return out


def _bar(progress: bool, total: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="trials", unit="trial", disable=not progress)


def _run_local(study: Any, runner: TrialRunner, todo: int, timeout: float | None, progress: bool) -> None:
    with _bar(progress, todo) as bar:
        study.optimize(runner, n_trials=todo, timeout=timeout, catch=(ValueError, np.linalg.LinAlgError),
                       callbacks=[lambda s, t: bar.update(1)])


def _run_dask(client: Any, study: Any, runner: TrialRunner, storage: Any, name: str, objective: tuple[str, ...],
              seed: int, trials: int, todo: int, timeout: float | None, progress: bool) -> None:
    """One Dask task per trial: a dead worker's task is retried elsewhere, finished trials stay in the storage."""
    from distributed import as_completed

    remote = client.scatter(runner, broadcast=True)  # model + data sent once per worker
    offset = len(study.trials)
    pending = {}
    for i in range(todo):
        f = client.submit(_run_on_worker, remote, storage, name, objective, seed + offset + i + 1, trials,
                          pure=False, retries=2)
        pending[f.key] = f
    ac = as_completed(list(pending.values()), timeout=timeout)
    deadline = None if timeout is None else time.monotonic() + timeout
    with _bar(progress, todo) as bar:
        try:
            for fut in ac:
                fut.exception()  # a failed task (e.g. too many dead workers) must not hide the others
                # drop our reference: a finished task whose worker dies later is not recomputed (its trial is
                # already in the storage)
                pending.pop(fut.key).release()
                bar.update(1)
                if deadline is not None and time.monotonic() > deadline:
                    break
        except TimeoutError:  # as_completed's own timeout: stop waiting, cancel what has not started
            pass
        finally:
            client.cancel(list(pending.values()))
            client.cancel([remote])
