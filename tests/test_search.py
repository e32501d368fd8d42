"""pfc.autocompress on real Optuna studies: in-process, on a real Dask LocalCluster (2 worker processes on
127.0.0.1, one killed mid-study), and resumed from a journal file after the searching process was killed."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import pyflux_compress as pfc

optuna = pytest.importorskip("optuna")
distributed = pytest.importorskip("distributed")
pytest.importorskip("optuna_integration")

ARCH = "Chain(Dense(64 => 32, relu), Dense(32 => 10))"
FAST = dict(finetune_epochs=1, progress=False, techniques=("prune", "share", "lowrank"), max_drop=5.0)


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    X, y = (d.data / 16).astype(np.float32), d.target.astype(np.int64)
    model = pfc.parse(ARCH, seed=0)
    pfc.fit(model, X[:1500], y[:1500], epochs=15, progress=False, seed=0)
    return model, X[:1500], y[:1500], X[1500:], y[1500:]


def _journal(path):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(str(path)))


def _wait_for_complete(journal, name: str, n: int, alive, seconds: float = 60.0) -> list:
    """Poll the study in ``journal`` until ``n`` trials are complete (or ``alive()`` is False / time is up)."""
    storage, done = None, []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and alive():
        try:
            storage = storage or _journal(journal)
            done = [t for t in optuna.load_study(study_name=name, storage=storage).trials
                    if t.state.name == "COMPLETE"]
        except (KeyError, ValueError, OSError):  # the search has not created the study yet
            done = []
        if len(done) >= n:
            break
        time.sleep(0.1)
    return done


def test_in_process_search_respects_budget_and_reports(digits):
    model, X, y, Xte, yte = digits
    r = pfc.autocompress(model, X, y, trials=5, test=(Xte, yte), **FAST)
    assert len(r.trials) == 5 and r.n_complete == 5
    assert r.best is not None and r.best["drop"] <= 5.0
    assert all(t["worker"] == "local" and t["pid"] == os.getpid() for t in r.trials)
    # the best model is the best trial's policy rebuilt: same validation accuracy and archive bytes
    assert pfc.size_report(r.best_model)["archive"] == r.best["archive_bytes"]
    assert r.best["archive_bytes"] == min(t["archive_bytes"] for t in r.trials if t["drop"] <= 5.0)
    assert r.ratio() > 2.0  # sparse + shared codebook beats fp32 dense
    assert 0.0 < r.test["best"] <= 1.0 and r.test["baseline"] == pfc.accuracy(model, Xte, yte)
    # per-layer policy of every trial, seeded first trial from the sensitivity table
    assert set(r.trials[0]["policy"]["layers"]) == {"layers[1]", "layers[2]"}
    assert "best: trial" in repr(r) and "policy:" in repr(r) and "+-" in repr(r)
    assert model.records == []  # input not modified
    # every trial's drop comes with its paired standard error, > 0 once the models disagree on an image
    assert all(t["drop_se"] is not None and t["drop_se"] >= 0 for t in r.trials)


def test_confidence_budget_counts_the_standard_error(digits):
    from statistics import NormalDist

    model, X, y, _, _ = digits
    plain = pfc.autocompress(model, X, y, trials=4, **{**FAST, "max_drop": 3.0})
    sure = pfc.autocompress(model, X, y, trials=4, confidence=0.9, **{**FAST, "max_drop": 3.0})
    assert sure.study_name != plain.study_name and sure.confidence == 0.9 and "90% confidence" in repr(sure)
    z = NormalDist().inv_cdf(0.9)
    for r in (plain, sure):
        for t in r.trials:  # the budget the search enforced, as the result reads it
            bound = t["drop"] + (z * t["drop_se"] if r is sure else 0.0)
            assert r.feasible(t) == (bound <= 3.0)
    assert sure.best is None or sure.best["drop"] + z * sure.best["drop_se"] <= 3.0
    with pytest.raises(ValueError, match="confidence must be in"):
        pfc.autocompress(model, X, y, confidence=1.0, **FAST)


def test_gradual_bound_is_one_rung_higher_and_density_is_sampled(digits):
    from pyflux_compress.search.space import SPARSITY_LADDER, build_space, suggest_policy

    model, X, y, _, _ = digits
    kw = dict(techniques=("prune", "share"), max_drop=1.0)
    once = build_space(model, X[:400], y[:400], **kw)
    grad = build_space(model, X[:400], y[:400], schedule="gradual", **kw)
    for a, b in zip(once["layers"], grad["layers"]):
        i = SPARSITY_LADDER.index(a["s_hi"])
        assert b["s_hi"] == SPARSITY_LADDER[min(i + 1, len(SPARSITY_LADDER) - 1)]
    # the sampled parameter is the kept fraction: density 0.05 is 95% sparse
    params = {"coding": "share", "layers[1].density": 0.05, "layers[1].sbits": 4,
              "layers[2].density": 1.0, "layers[2].sbits": 5}
    policy = suggest_policy(optuna.trial.FixedTrial(params), grad)
    assert policy["layers"]["layers[1]"]["sparsity"] == 0.95 and policy["layers"]["layers[2]"]["sparsity"] == 0.0


def test_paired_drop_se_counts_only_disagreements():
    from pyflux_compress.search import paired_drop_se

    base = np.ones(6000, bool)
    same = base.copy()
    assert paired_drop_se(base, same) == 0.0
    worse = base.copy()
    worse[:60] = False  # 60 of 6,000 images lost: a 1-point drop, d = 1 on 60 images, 0 elsewhere
    d = np.r_[np.ones(60), np.zeros(5940)]
    assert paired_drop_se(base, worse) == pytest.approx(100 * d.std() / np.sqrt(6000))
    # 60 lost and 54 gained: the same 0.1-point drop as 6 lost, but far noisier
    mixed = base.copy()
    mixed[:60] = False
    b2 = base.copy()
    b2[100:154] = False
    assert paired_drop_se(b2, mixed) > 4 * paired_drop_se(base, np.r_[np.zeros(6, bool), np.ones(5994, bool)])
    assert paired_drop_se(b2, mixed) == pytest.approx(100 * np.sqrt(114 / 6000 - (6 / 6000) ** 2) / np.sqrt(6000))


@pytest.mark.parametrize("kw, match", [
    (dict(objective="speed"), "objective must be one of"),
    (dict(techniques=("prune", "magic")), "techniques entry must be one of"),
    (dict(max_drop=-1), "max_drop"),
    (dict(trials=0), "trials must be >= 1"),
    (dict(validation=0.9), "validation"),
    (dict(executor=42), "executor must be None"),
    (dict(storage=3), "storage must be None"),
    (dict(schedule="fast"), "schedule must be one of"),
    (dict(schedule="gradual", prune_epochs=0), "prune_epochs must be >= 1"),
    (dict(objective=("size", "accuracy"), prune_margin=0.5), "prune_margin needs a single objective"),
    (dict(warm_start=0), "warm_start must be >= 1"),
    (dict(enqueue={"coding": "share"}), "enqueue must be a list"),
    (dict(enqueue=[{"layers[9].sparsity": 0.5}], trials=1, **FAST), r"enqueue\[0\]: unknown parameter 'layers\[9\]"),
    (dict(enqueue=[{"layers[1].sparsity": 1.5}], trials=1, **FAST), "outside the domain of a 'sparsity'"),
])
def test_arguments_validated_up_front(digits, kw, match):
    model, X, y, _, _ = digits
    with pytest.raises(ValueError, match=match):
        pfc.autocompress(model, X, y, **kw)


def test_gradual_schedule_warm_starts_and_enqueued_trials(digits):
    model, X, y, _, _ = digits
    kw = {**FAST, "techniques": ("prune", "share")}
    hand = {"layers[1].sparsity": 0.8, "layers[2].sparsity": 0.5, "coding": "share", "layers[1].sbits": 3,
            "layers[2].sbits": 4}
    r = pfc.autocompress(model, X, y, trials=4, schedule="gradual", prune_epochs=2, share_epochs=1,
                         weight_decay=1e-4, warm_start=3, enqueue=[hand], **kw)
    warm = r.space["warm_params"]
    assert 1 <= len(warm) <= 3 and warm[0] == r.space["seed_params"]
    # the first trials are the sensitivity warm starts, then the enqueued policy, in that order
    assert [t["params"] for t in r.trials[:len(warm)]] == warm
    mine = r.trials[len(warm)]
    # an enqueued sparsity is the sampled density 1 - sparsity
    assert mine["params"] == {"layers[1].density": 1 - 0.8, "layers[2].density": 1 - 0.5, "coding": "share",
                              "layers[1].sbits": 3, "layers[2].sbits": 4}
    assert mine["policy"]["layers"]["layers[1]"]["bits"] == 3
    assert [mine["policy"]["layers"][p]["sparsity"] for p in ("layers[1]", "layers[2]")] == [0.8, 0.5]
    # warm starts are read off the table at growing budgets: sparsity never falls along the ladder
    for a, b in zip(warm, warm[1:]):
        assert all(b[k] <= a[k] for k in a if k.endswith(".density"))
    # the best model holds its policy's sparsity, reached by PolynomialDecay (one schedule per pruned layer)
    pol = r.best["policy"]["layers"]
    for path, layer in pfc.modules(r.best_model):
        if path in pol and pol[path]["sparsity"] > 0:
            w = layer.weight  # a shared layer's effective weight
            assert abs(np.mean(w == 0) - pol[path]["sparsity"]) <= 1.0 / w.size + 1e-9
    decay = [rec for rec in r.records if rec["method"] == "polynomial_decay"]
    assert len(decay) == sum(p["sparsity"] > 0 for p in pol.values())
    assert pfc.size_report(r.best_model)["archive"] == r.best["archive_bytes"]


def test_enqueued_trial_added_when_a_study_resumes(digits, tmp_path):
    model, X, y, _, _ = digits
    kw = {**FAST, "techniques": ("prune", "share"), "storage": str(tmp_path / "study.log")}
    first = pfc.autocompress(model, X, y, trials=1, **kw)
    mine = {"coding": "share", "layers[1].sparsity": 0.6, "layers[1].sbits": 4}
    again = pfc.autocompress(model, X, y, trials=2, enqueue=[mine], **kw)
    assert again.study_name == first.study_name and again.trials[0] == first.trials[0]
    assert again.trials[1]["params"] == {**again.trials[1]["params"], "coding": "share", "layers[1].density": 1 - 0.6,
                                         "layers[1].sbits": 4}
    # resuming with the same enqueue adds nothing: the trial exists
    third = pfc.autocompress(model, X, y, trials=2, enqueue=[mine], **kw)
    assert len(third.trials) == 2


def test_prune_margin_stops_hopeless_trials_early(digits):
    model, X, y, _, _ = digits
    kw = {**FAST, "techniques": ("prune", "share"), "max_drop": 1.0}
    hopeless = {"layers[1].sparsity": 0.99, "layers[2].sparsity": 0.99, "coding": "float"}
    r = pfc.autocompress(model, X, y, trials=2, schedule="gradual", prune_epochs=1, prune_margin=0.0,
                         enqueue=[hopeless], **kw)
    states = [t["state"] for t in r.trials]
    pruned = [t for t in r.trials if t["params"] == {"layers[1].density": 1 - 0.99, "layers[2].density": 1 - 0.99,
                                                     "coding": "float"}]
    assert pruned and pruned[0]["state"] == "PRUNED" and pruned[0]["archive_bytes"] is None
    assert pruned[0]["policy"]["layers"]["layers[1]"]["sparsity"] == 0.99  # recorded before the work
    assert states.count("COMPLETE") == 1 and r.n_complete == 1


def test_dask_cluster_runs_trials_on_workers_and_survives_a_killed_worker(digits, tmp_path):
    from distributed import Client, LocalCluster

    model, X, y, _, _ = digits
    journal = tmp_path / "study.log"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        worker_pids = set(client.run(os.getpid).values())
        out: dict = {}

        def search():
            out["r"] = pfc.autocompress(model, X, y, trials=8, executor=client, storage=str(journal),
                                        study_name="dask", **FAST)

        th = threading.Thread(target=search)
        th.start()
        before = _wait_for_complete(journal, "dask", 2, th.is_alive)  # then kill a worker mid-study
        assert len(before) >= 2
        victim = sorted(worker_pids)[0]
        os.kill(victim, signal.SIGKILL)
        th.join(120)
        assert not th.is_alive()
        worker_pids |= set(client.run(os.getpid).values())  # the nanny restarted the killed worker
    r = out["r"]
    assert r.n_complete >= 8 and r.best is not None
    # trials ran on the worker processes, not here
    pids = {t["pid"] for t in r.trials if t["state"] == "COMPLETE"}
    assert pids <= worker_pids and os.getpid() not in pids
    assert all(t["worker"].startswith("tcp://127.0.0.1:") for t in r.trials if t["state"] == "COMPLETE")
    # every trial completed before the kill is still there, with the same measurements
    by_number = {t["number"]: t for t in r.trials}
    for t in before:
        assert by_number[t.number]["state"] == "COMPLETE"
        assert by_number[t.number]["values"] == list(t.values)
    # nothing left RUNNING: the killed worker's trial (if one was running) is marked FAIL
    assert all(t["state"] in ("COMPLETE", "FAIL") for t in r.trials)


SCRIPT = textwrap.dedent("""
    import sys, numpy as np, pyflux_compress as pfc
    from sklearn.datasets import load_digits
    d = load_digits(); X = (d.data / 16).astype(np.float32)[:1500]; y = d.target[:1500]
    model = pfc.parse({arch!r}, seed=0)
    pfc.fit(model, X, y, epochs=15, progress=False, seed=0)
    pfc.autocompress(model, X, y, trials=int(sys.argv[2]), storage=sys.argv[1], study_name="resume",
                     finetune_epochs=1, progress=False, techniques=("prune", "share", "lowrank"), max_drop=5.0)
""")


def test_interrupted_study_resumes_from_its_storage(tmp_path):
    journal = tmp_path / "study.log"
    script = tmp_path / "search.py"
    script.write_text(SCRIPT.format(arch=ARCH))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, str(script), str(journal), "1000"], env=env)
    try:
        done = _wait_for_complete(journal, "resume", 3, lambda: proc.poll() is None)
    finally:
        proc.send_signal(signal.SIGKILL)  # interrupted hard, in the middle of a trial
        proc.wait()
    assert len(done) >= 3
    n_done = len(optuna.load_study(study_name="resume", storage=_journal(journal)).trials)
    # resume in a fresh process: finished trials are kept, only the missing ones run
    target = n_done + 2
    subprocess.run([sys.executable, str(script), str(journal), str(target)], env=env, check=True, timeout=120)
    trials = optuna.load_study(study_name="resume", storage=_journal(journal)).trials
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) == target
    for t in done:
        assert trials[t.number].state.name == "COMPLETE" and trials[t.number].values == t.values
    assert not [t for t in trials if t.state.name == "RUNNING"]


def test_example_07_runs_and_prints_its_effect(tmp_path):
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "examples" / "07_autocompress.py"
    env = {**os.environ, "PYFLUX_EXAMPLE_FAST": "1", "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": os.pathsep.join(sys.path)}
    r = subprocess.run([sys.executable, str(script), "--out", str(tmp_path), "--trials", "3", "--max-drop", "5",
                        "--epochs", "1"], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "effect:" in r.stdout and "policy:" in r.stdout
    assert (tmp_path / "best.pfcz").stat().st_size > 0 and (tmp_path / "front.png").stat().st_size > 0


def test_cli_autocompress_writes_model_json_and_plot(tmp_path, capsys):
    import json

    from pyflux_compress import cli

    model_path = tmp_path / "m.jld2"
    assert cli.main(["train", "Chain(Dense(64 => 32, relu), Dense(32 => 10))", "--dataset", "digits", "--epochs",
                     "15", "-q", "-o", str(model_path)]) == 0
    out = tmp_path / "best.pfcz"
    code = cli.main(["autocompress", str(model_path), "--dataset", "digits", "--max-drop", "5", "--trials", "3",
                     "--techniques", "prune,share", "--finetune-epochs", "1", "--storage", str(tmp_path / "s.log"),
                     "-q", "-o", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "Pareto front" in text and "best: trial" in text
    saved = json.loads((tmp_path / "best.json").read_text())
    assert len(saved["trials"]) == 3 and saved["best"]["archive_bytes"] == out.stat().st_size
    assert (tmp_path / "best.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert pfc.load_compressed(str(out)) is not None
    # bad flags are one-line usage errors
    assert cli.main(["autocompress", str(model_path), "--dataset", "digits", "--objective", "speed", "-o",
                     str(out)]) == 2
