"""Seconds per epoch of ``pfc.fit`` vs the same training loop in PyTorch CPU, measured in one run.

Workload (issue 2): the article's MLP ``Chain(Dense(784 => 128, relu), Dense(128 => 64, relu), Dense(64 => 10))``
on Fashion-MNIST (60000 samples), batch 128, Adam(1e-3), logit cross-entropy, shuffled every epoch. Both sides do
the same per-step bookkeeping (loss value and number of correct predictions) and use the same number of threads.

The machine is shared, so the two engines run *interleaved*, one epoch each per round, and the script reports the
median and the minimum per engine; the ratio pfc/torch (target <= 1.25) is given for both.

OpenBLAS tuning variables (``OPENBLAS_CORETYPE``, ``OPENBLAS_L2_SIZE``) can slow numpy's bundled OpenBLAS; they
are reported, and if any is set the benchmark is repeated in a subprocess without them.

Usage::

    python benchmarks/bench_train.py [--rounds 5] [--threads N] [--data fashion-mnist]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

ARTICLE_MLP = "Chain(Dense(784 => 128, relu), Dense(128 => 64, relu), Dense(64 => 10))"
BLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
TUNING_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def blas_info() -> list[dict]:
    try:
        import threadpoolctl
    except ImportError:
        return []
    return [{k: d.get(k) for k in ("internal_api", "version", "architecture", "num_threads", "threading_layer")}
            for d in threadpoolctl.threadpool_info()]


def numpy_threads() -> int:
    infos = [d for d in blas_info() if d.get("internal_api") in ("openblas", "mkl", "blis")]
    return int(infos[0]["num_threads"]) if infos else (os.cpu_count() or 1)


def make_torch_trainer(X: np.ndarray, y: np.ndarray, batchsize: int, threads: int, seed: int):
    """Return ``epoch() -> seconds`` running one epoch of the torch equivalent, or None without torch."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    Xt, yt = torch.from_numpy(np.array(X)), torch.from_numpy(np.array(y))
    model = torch.nn.Sequential(torch.nn.Linear(784, 128), torch.nn.ReLU(), torch.nn.Linear(128, 64),
                                torch.nn.ReLU(), torch.nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)  # default: foreach implementation on CPU
    gen = torch.Generator().manual_seed(seed)
    lossf = torch.nn.functional.cross_entropy

    def epoch() -> tuple[float, float]:
        t0 = time.perf_counter()
        perm = torch.randperm(len(Xt), generator=gen)
        loss_sum, correct = 0.0, 0
        for lo in range(0, len(Xt), batchsize):
            idx = perm[lo:lo + batchsize]
            xb, yb = Xt[idx], yt[idx]
            opt.zero_grad(set_to_none=True)
            out = model(xb)
            loss = lossf(out, yb)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(idx)
            correct += int((out.argmax(1) == yb).sum())
        return time.perf_counter() - t0, loss_sum / len(Xt)

    return epoch


def run(args: argparse.Namespace) -> dict:
    import pyflux_compress as pfc

    threads = args.threads or numpy_threads()
    load_before = list(os.getloadavg())  # the machine is shared: a high load makes every figure noisier
    try:
        from threadpoolctl import threadpool_limits
        limiter = threadpool_limits(limits=threads, user_api="blas")
    except ImportError:
        limiter = None
    Xtr, ytr, _, _ = pfc.datasets.load(args.data)
    X = np.ascontiguousarray(Xtr.reshape(len(Xtr), -1))
    model = pfc.parse(ARTICLE_MLP, seed=0)
    opt = pfc.Adam(1e-3)
    torch_epoch = None if args.no_torch else make_torch_trainer(X, ytr, args.batchsize, threads, seed=0)

    # warm-up (allocator, BLAS thread pool, lazy imports) on a slice, not timed
    pfc.fit(model.copy(), X[:4096], ytr[:4096], epochs=1, batchsize=args.batchsize, progress=False)

    pfc_times, torch_times, pfc_loss, torch_loss = [], [], [], []
    for r in range(args.rounds):
        h = pfc.fit(model, X, ytr, epochs=1, batchsize=args.batchsize, opt=opt, progress=False, seed=r)
        pfc_times.append(h.seconds[0])
        pfc_loss.append(h.loss[0])
        if torch_epoch is not None:
            seconds, loss = torch_epoch()
            torch_times.append(seconds)
            torch_loss.append(loss)
    blas = blas_info()  # while the thread limit is still in force
    if limiter is not None:
        limiter.restore_original_limits()
    result = {
        "env": {k: os.environ.get(k) for k in BLAS_VARS},
        "blas": blas,
        "threads": threads,
        "loadavg_before": load_before,
        "loadavg_after": list(os.getloadavg()),
        "numpy": np.__version__,
        "rounds": args.rounds,
        "pfc_seconds": pfc_times,
        "pfc_loss": pfc_loss,
        "torch_seconds": torch_times,
        "torch_loss": torch_loss,
    }
    if torch_epoch is not None:
        import torch

        result["torch"] = torch.__version__
    return result


def summarize(label: str, r: dict) -> str:
    lines = [f"### {label}", "",
             f"numpy {r['numpy']}, BLAS {json.dumps(r['blas'])}, threads {r['threads']}",
             f"env: {', '.join(f'{k}={v}' for k, v in r['env'].items() if v is not None) or '(no BLAS variables set)'}",
             f"load average (1/5/15 min) before: {' '.join(f'{x:.1f}' for x in r['loadavg_before'])}, "
             f"after: {' '.join(f'{x:.1f}' for x in r['loadavg_after'])} (on {os.cpu_count()} cores)",
             "",
             "| engine | median s/epoch | min s/epoch | all rounds (s) | train loss per round |",
             "|---|---|---|---|---|"]
    p = r["pfc_seconds"]
    lines.append(f"| pyflux-compress fit | {statistics.median(p):.3f} | {min(p):.3f} | "
                 f"{' '.join(f'{t:.2f}' for t in p)} | {' '.join(f'{v:.3f}' for v in r['pfc_loss'])} |")
    t = r["torch_seconds"]
    if t:
        lines.append(f"| PyTorch {r.get('torch', '')} CPU | {statistics.median(t):.3f} | {min(t):.3f} | "
                     f"{' '.join(f'{x:.2f}' for x in t)} | {' '.join(f'{v:.3f}' for v in r['torch_loss'])} |")
        med = statistics.median(p) / statistics.median(t)
        best = min(p) / min(t)
        verdict = "meets" if med <= 1.25 else "MISSES"
        lines += ["", f"ratio pfc/torch: median {med:.2f}, min {best:.2f} (target <= 1.25: {verdict} on medians)"]
    else:
        lines += ["", "PyTorch is not installed: comparison skipped."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5, help="interleaved epochs per engine")
    ap.add_argument("--batchsize", type=int, default=128)
    ap.add_argument("--threads", type=int, default=0, help="threads for both engines (default: numpy's BLAS)")
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--json", action="store_true", help="print raw JSON only (used for the subprocess re-run)")
    ap.add_argument("--no-rerun", action="store_true", help="do not re-run without the OpenBLAS tuning variables")
    args = ap.parse_args()

    result = run(args)
    if args.json:
        print(json.dumps(result))
        return
    print("## bench_train: article MLP, Fashion-MNIST, batch", args.batchsize, "Adam(1e-3)\n")
    set_vars = [v for v in TUNING_VARS if os.environ.get(v)]
    print(summarize("as-is (current environment)", result))
    if set_vars and not args.no_rerun:
        env = {k: v for k, v in os.environ.items() if k not in TUNING_VARS}
        cmd = [sys.executable, __file__, "--json", "--no-rerun", "--rounds", str(args.rounds),
               "--batchsize", str(args.batchsize), "--threads", str(result["threads"]), "--data", args.data]
        if args.no_torch:
            cmd.append("--no-torch")
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        print()
        print(summarize(f"subprocess with {', '.join(set_vars)} unset", json.loads(out.stdout.splitlines()[-1])))


# ---- issue 13: the LSTM (sequential Fashion-MNIST) against the same model in PyTorch -------------------------
LSTM_MODEL = "Chain(LSTM(28 => 64), flatten, Dense(1792 => 10))"


def lstm_vs_torch(rounds: int = 3, n: int = 10000, batchsize: int = 64, seed: int = 0) -> dict:
    """Seconds per epoch of ``pfc.fit`` on :data:`LSTM_MODEL` vs ``nn.LSTM(28, 64, batch_first=True)`` + flatten
    + ``nn.Linear(1792, 10)`` (same data: the first ``n`` Fashion-MNIST images as 28 rows of 28 features; Adam
    2e-3; logit cross-entropy), one thread each, interleaved epochs. Run: ``bench_train.py --lstm``."""
    import pyflux_compress as pfc
    import torch
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    Xtr, ytr, _, _ = pfc.datasets.load("fashion-mnist")
    X, y = np.ascontiguousarray(Xtr[:n, 0]), ytr[:n]
    model = pfc.parse(LSTM_MODEL, seed=seed)
    opt = pfc.Adam(2e-3)
    tm = torch.nn.ModuleDict({"lstm": torch.nn.LSTM(28, 64, batch_first=True), "fc": torch.nn.Linear(1792, 10)})
    topt = torch.optim.Adam(tm.parameters(), lr=2e-3)
    Xt, yt = torch.from_numpy(np.array(X)), torch.from_numpy(np.array(y))
    gen = torch.Generator().manual_seed(seed)

    def torch_epoch() -> float:
        t0 = time.perf_counter()
        perm = torch.randperm(n, generator=gen)
        for lo in range(0, n, batchsize):
            idx = perm[lo:lo + batchsize]
            topt.zero_grad(set_to_none=True)
            out = tm["fc"](tm["lstm"](Xt[idx])[0].reshape(len(idx), -1))
            torch.nn.functional.cross_entropy(out, yt[idx]).backward()
            topt.step()
        return time.perf_counter() - t0

    ours, theirs = [], []
    for r in range(rounds):
        t0 = time.perf_counter()
        pfc.fit(model, X, y, epochs=1, batchsize=batchsize, opt=opt, progress=False, seed=seed + r)
        ours.append(time.perf_counter() - t0)
        theirs.append(torch_epoch())
    res = {"model": LSTM_MODEL, "n": n, "batchsize": batchsize, "pfc_s": ours, "torch_s": theirs,
           "ratio_median": statistics.median(ours) / statistics.median(theirs),
           "ratio_min": min(ours) / min(theirs)}
    print(f"LSTM {LSTM_MODEL}, {n} sequences/epoch, batch {batchsize}, 1 thread: pfc median "
          f"{statistics.median(ours):.2f} s, torch median {statistics.median(theirs):.2f} s; pfc/torch "
          f"{res['ratio_median']:.2f} (median), {res['ratio_min']:.2f} (min)")
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "lstm_train.md")
    with open(out + ".tmp", "w") as f:
        f.write(f"# LSTM training: pfc vs PyTorch (bench_train.py --lstm)\n\n`{LSTM_MODEL}`, first {n} Fashion-MNIST "
                f"images as 28 rows of 28 features, batch {batchsize}, Adam(2e-3), 1 thread each, {rounds} interleaved "
                f"epochs.\n\n| | pfc s/epoch | torch s/epoch | pfc/torch |\n|---|---|---|---|\n"
                f"| median | {statistics.median(ours):.2f} | {statistics.median(theirs):.2f} | "
                f"{res['ratio_median']:.2f} |\n| min | {min(ours):.2f} | {min(theirs):.2f} | {res['ratio_min']:.2f} |\n")
    os.replace(out + ".tmp", out)
    return res


if __name__ == "__main__":
    if "--lstm" in sys.argv:
        lstm_vs_torch()
    else:
        main()
