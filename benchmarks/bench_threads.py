"""Epoch-time stability under background CPU load: the thread policy (``pfc.threads``) vs all-cores BLAS.

The script starts two busy-looping Python processes itself (one per core of the 2-core test machine; their
count is ``--busy``), trains the article MLP ``Chain(Dense(784 => 128, relu), Dense(128 => 64, relu),
Dense(64 => 10))`` on Fashion-MNIST (60,000 images, batch 128, Adam(1e-3)) one epoch per round, and stops the
busy processes at the end (also on Ctrl-C or an error).

* **default** — ``pfc.fit(...)`` with default settings (``threads=None``: the cores other processes leave idle;
  here 1 under the load).
* **anchor, measured in the same run, interleaved** — ``threads=<all cores>``: what OpenBLAS does by default
  (one thread per core), i.e. the behaviour before the policy existed.

Target (issue 16): with default settings the epoch varies by <= 2x between rounds (max / min). The script
prints every round, the spread of each mode, and the thread count the policy chose in each round.

    env -u OPENBLAS_NUM_THREADS -u OMP_NUM_THREADS python benchmarks/bench_threads.py [--rounds 6] [--busy 2]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import numpy as np

ARTICLE_MLP = "Chain(Dense(784 => 128, relu), Dense(128 => 64, relu), Dense(64 => 10))"
TARGET = 2.0


def start_busy(n: int) -> list[subprocess.Popen]:
    """``n`` processes spinning on a core each (pure Python loop, no I/O)."""
    return [subprocess.Popen([sys.executable, "-c", "while True:\n    pass"]) for _ in range(n)]


def stop_busy(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=6, help="epochs per mode (interleaved)")
    ap.add_argument("--busy", type=int, default=2, help="background busy processes to start")
    ap.add_argument("--samples", type=int, default=60000, help="training images per epoch")
    ap.add_argument("--anchor-timeout", type=float, default=120.0,
                    help="stop running the all-cores anchor once one of its epochs exceeds this many seconds")
    ap.add_argument("--out", help="also write the report (markdown) to this file")
    args = ap.parse_args()

    import pyflux_compress as pfc

    Xtr, ytr, _, _ = pfc.datasets.load("fashion-mnist")
    X = np.ascontiguousarray(Xtr[:args.samples].reshape(args.samples, -1))
    y = ytr[:args.samples]
    cores = pfc.threads.available_cores()
    env = {k: os.environ[k] for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "PYFLUX_COMPRESS_THREADS")
           if k in os.environ}
    header = ["## bench_threads: article MLP epoch under background load", "",
             f"{cores} cores; {args.busy} busy background processes started by the script; "
             f"{args.samples} images, batch 128, Adam(1e-3); env: {env or '(no thread variables)'}", ""]
    print("\n".join(header), flush=True)

    quiet_default = pfc.threads.default_threads()
    busy = start_busy(args.busy)
    res: dict[str, list[float]] = {"default": [], "all cores": []}
    chosen: list[int] = []
    load = []
    try:
        time.sleep(2.0)  # let the busy processes show up in the run queue
        models = {mode: pfc.parse(ARTICLE_MLP, seed=0) for mode in res}
        opts = {mode: pfc.Adam(1e-3) for mode in res}
        anchor_on = True
        for r in range(args.rounds):
            order = ("default", "all cores") if r % 2 == 0 else ("all cores", "default")
            for mode in order:
                if mode == "all cores" and not anchor_on:
                    continue
                if mode == "default":
                    chosen.append(pfc.threads.default_threads())  # what fit's threads=None resolves to now
                kw = {} if mode == "default" else {"threads": cores}
                h = pfc.fit(models[mode], X, y, epochs=1, batchsize=128, opt=opts[mode], progress=False, seed=r,
                            **kw)
                res[mode].append(h.seconds[0])
                print(f"round {r + 1} {mode:9s}: {h.seconds[0]:7.2f} s"
                      + (f" (policy chose {chosen[-1]} thread(s))" if mode == "default" else ""), flush=True)
                if mode == "all cores" and h.seconds[0] > args.anchor_timeout:
                    anchor_on = False
                    print(f"(all-cores anchor stopped: an epoch took more than {args.anchor_timeout:.0f} s)")
            load.append(os.getloadavg()[0])
    finally:
        stop_busy(busy)

    lines = ["", f"policy default before the load: {quiet_default} thread(s); under load it chose: "
                 f"{' '.join(map(str, chosen))}; 1-min load average during the rounds: "
                 f"{' '.join(f'{v:.1f}' for v in load)}", "",
             "| mode | rounds (s/epoch) | median | min | max | max / min |", "|---|---|---|---|---|---|"]
    for mode, t in res.items():
        if t:
            lines.append(f"| {mode} | {' '.join(f'{v:.2f}' for v in t)} | {statistics.median(t):.2f} | "
                         f"{min(t):.2f} | {max(t):.2f} | {max(t) / min(t):.2f} |")
    spread = max(res["default"]) / min(res["default"])
    lines += ["", f"default settings: epoch varies by {spread:.2f}x between rounds (target <= {TARGET}: "
                  f"{'meets' if spread <= TARGET else 'MISSES'})"]
    if res["all cores"]:
        lines.append(f"all-cores anchor: {max(res['all cores']) / min(res['all cores']):.2f}x between rounds; "
                     f"median all-cores / default = "
                     f"{statistics.median(res['all cores']) / statistics.median(res['default']):.2f}")
    print("\n".join(lines), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(header + lines) + "\n")


if __name__ == "__main__":
    main()
