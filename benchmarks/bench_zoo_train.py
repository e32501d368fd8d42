"""Training speed of the layer-zoo reference nets: ``pfc.fit`` steps vs the same nets in PyTorch CPU.

Workload (issue 12): the ResNet (SkipConnection + BatchNorm) and the MobileNet-style net (depthwise + pointwise
Conv) of examples/resnet_fashion_mnist.py and examples/mobilenet_fashion_mnist.py, batch 128 of Fashion-MNIST
images, Adam(2e-3), logit cross-entropy, ``--threads`` threads each (default 1: ``pfc.fit(threads=)``,
``torch.set_num_threads``). Both nets have BatchNorm, so ``pfc.fit`` keeps them on the sequential path at any
thread count (only the conv kernels split the batch; see pyflux_compress/train/parallel.py). The machine is
shared, so the engines run interleaved, ``--rounds`` rounds of ``--steps`` steps each, and the median seconds
per step (wall and CPU) and the ratio pfc/torch are printed with the load average (and written to
benchmarks/results/zoo_train.md, or ``--out``).

Usage::

    python benchmarks/bench_zoo_train.py [--rounds 3] [--steps 20] [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))


def torch_resnet(nn):
    def block(c):
        return nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c, 3, padding=1),
                             nn.BatchNorm2d(c))

    class Skip(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x) + x

    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, stride=2), nn.ReLU(), Skip(block(16)), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), Skip(block(32)), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))


def torch_mobilenet(nn):
    def bn(c):
        return [nn.BatchNorm2d(c), nn.ReLU6()]
    return nn.Sequential(nn.Conv2d(1, 32, 3, padding=1, stride=2), *bn(32), nn.Conv2d(32, 32, 3, padding=1, groups=32),
                         *bn(32), nn.Conv2d(32, 64, 1), *bn(64), nn.Conv2d(64, 64, 3, padding=1, stride=2, groups=64),
                         *bn(64), nn.Conv2d(64, 128, 1), *bn(128), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(128, 10))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "zoo_train.md"))
    args = p.parse_args()
    import torch
    from torch import nn

    import mobilenet_fashion_mnist as mob
    import pyflux_compress as pfc
    import resnet_fashion_mnist as res

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    Xtr, ytr, _, _ = pfc.datasets.load("fashion-mnist")
    n = 128 * args.steps
    X, y = np.array(Xtr[:n]), ytr[:n].astype(np.int64)          # writable copies (torch.from_numpy)
    rows = []
    for name, arch, tmodel in (("ResNet", res.ARCH, torch_resnet(nn)), ("MobileNet-style", mob.ARCH, torch_mobilenet(nn))):
        model = pfc.parse(arch, seed=0)
        opt_t = torch.optim.Adam(tmodel.parameters(), lr=2e-3)
        Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
        t_pfc, t_torch, c_pfc, c_torch = [], [], [], []
        for _ in range(args.rounds):
            t0, c0 = time.perf_counter(), time.process_time()
            pfc.fit(model, X, y, epochs=1, batchsize=128, opt=pfc.Adam(2e-3), progress=False, shuffle=False,
                    threads=args.threads)
            t_pfc.append((time.perf_counter() - t0) / args.steps)
            c_pfc.append((time.process_time() - c0) / args.steps)
            t0, c0 = time.perf_counter(), time.process_time()
            for i in range(args.steps):
                opt_t.zero_grad()
                loss = nn.functional.cross_entropy(tmodel(Xt[i * 128:(i + 1) * 128]), yt[i * 128:(i + 1) * 128])
                loss.backward()
                opt_t.step()
            t_torch.append((time.perf_counter() - t0) / args.steps)
            c_torch.append((time.process_time() - c0) / args.steps)
        mp, mt = statistics.median(t_pfc), statistics.median(t_torch)
        cp, ct = statistics.median(c_pfc), statistics.median(c_torch)
        rows.append((name, mp, mt, mp / mt, cp / ct))
        print(f"{name}: pfc {1e3 * mp:.1f} ms/step, torch {1e3 * mt:.1f} ms/step, ratio pfc/torch {mp / mt:.2f} "
              f"(CPU time {cp / ct:.2f})", flush=True)
    load = f"load average before {load_before[0]:.1f}, after {os.getloadavg()[0]:.1f} (on {os.cpu_count()} cores)"
    print(load)
    out = Path(args.out)
    out.parent.mkdir(exist_ok=True)
    lines = [f"# Layer-zoo nets: training step time, pfc vs PyTorch CPU ({args.threads} thread(s), batch 128)", "",
             f"{args.rounds} interleaved rounds of {args.steps} steps; medians; {load}.", "",
             "| net | pfc ms/step | torch ms/step | ratio | CPU-time ratio |", "|---|---|---|---|---|"]
    lines += [f"| {n_} | {1e3 * a:.1f} | {1e3 * b:.1f} | {r:.2f} | {c:.2f} |" for n_, a, b, r, c in rows]
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
