"""Core-model benchmark: the issue's CNN trained with ``pfc.fit`` on Fashion-MNIST, on one core.

    python benchmarks/bench_model.py [--epochs 2] [--batchsize 128] [--limit N]

Prints, measured in this run: seconds per epoch (wall clock and this process's CPU time — the CPU time is the
honest figure on a shared machine), the test accuracy after the last epoch, and, when PyTorch is installed, the
same network / batch size / Adam in PyTorch CPU as the anchor with the ratio ours/torch.
BLAS and torch are pinned to one thread so the figures are per core.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import pyflux_compress as pfc  # noqa: E402

CNN = ("Chain(Conv((3, 3), 1 => 8, relu), MaxPool((2, 2)), Conv((3, 3), 8 => 16, relu), MaxPool((2, 2)), "
       "flatten, Dense(400 => 10))")


def bench_ours_one_fit(X, y, Xte, yte, epochs: int, batchsize: int, lr: float) -> dict:
    """One fit call over all epochs (Adam state kept); per-epoch seconds from History."""
    model = pfc.parse(CNN, seed=0)
    c0 = time.process_time()
    hist = pfc.fit(model, X, y, epochs=epochs, batchsize=batchsize, opt=pfc.Adam(lr), progress=False, seed=0)
    cpu = time.process_time() - c0
    return {"wall": list(hist.seconds), "cpu_total": cpu, "acc": pfc.accuracy(model, Xte, yte)}


def bench_torch(X, y, Xte, yte, epochs: int, batchsize: int, lr: float) -> dict | None:
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                              torch.nn.Conv2d(8, 16, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                              torch.nn.Flatten(), torch.nn.Linear(400, 10))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    lossf = torch.nn.CrossEntropyLoss()
    Xt, yt = torch.from_numpy(np.array(X)), torch.from_numpy(np.array(y))
    rng = np.random.default_rng(0)
    walls, cpus = [], []
    for _ in range(epochs):
        w0, c0 = time.perf_counter(), time.process_time()
        perm = torch.from_numpy(rng.permutation(len(X)))
        for i in range(0, len(X), batchsize):
            idx = perm[i:i + batchsize]
            opt.zero_grad()
            loss = lossf(net(Xt[idx]), yt[idx])
            loss.backward()
            opt.step()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    with torch.no_grad():
        pred = net(torch.from_numpy(np.array(Xte))).argmax(dim=1).numpy()
    return {"wall": walls, "cpu": cpus, "acc": float(np.mean(pred == yte))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batchsize", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate (both frameworks)")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N training images")
    args = ap.parse_args()

    X, y, Xte, yte = pfc.datasets.load("fashion-mnist")
    if args.limit:
        X, y = X[:args.limit], y[:args.limit]
    print(f"CNN: {CNN}\ntrain {X.shape}, batchsize {args.batchsize}, Adam({args.lr:g}), 1 thread\n")

    ours = bench_ours_one_fit(X, y, Xte, yte, args.epochs, args.batchsize, args.lr)
    cpu_per_epoch = ours["cpu_total"] / args.epochs
    print(f"pyflux-compress fit: wall s/epoch {['%.1f' % s for s in ours['wall']]}, "
          f"CPU s/epoch {cpu_per_epoch:.1f}, test accuracy after {args.epochs} epochs {ours['acc']:.4f}")

    ref = bench_torch(X, y, Xte, yte, args.epochs, args.batchsize, args.lr)
    if ref is None:
        print("torch not installed: anchor skipped")
        return
    tcpu = sum(ref["cpu"]) / args.epochs
    print(f"torch CPU anchor:    wall s/epoch {['%.1f' % s for s in ref['wall']]}, CPU s/epoch {tcpu:.1f}, "
          f"test accuracy {ref['acc']:.4f}")
    print(f"ratio ours/torch (CPU time per epoch): {cpu_per_epoch / tcpu:.2f}")


if __name__ == "__main__":
    main()
