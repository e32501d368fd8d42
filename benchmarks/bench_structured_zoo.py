"""Speed of the layer-zoo reference models before and after 50% structured pruning (coupled across
SkipConnection by the dependency-group planner): parameters, NumPy forward and onnxruntime forward, ratios against
the unpruned model measured in the same run.

    python benchmarks/bench_structured_zoo.py [--batch 256] [--repeat 7] [--threads 1]

Weights are the seeded initialisation (speed does not depend on training). Prints the machine's load average:
timings taken on a loaded machine say so.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import pyflux_compress as pfc  # noqa: E402


def _median_ms(f, repeat: int) -> float:
    f()                                         # warm-up (allocations, ORT session caches)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def main() -> int:
    import autoencoder_fashion_mnist
    import mobilenet_fashion_mnist
    import resnet_fashion_mnist

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    x = np.random.default_rng(0).random((args.batch, 1, 28, 28), dtype=np.float32)
    out = Path(tempfile.mkdtemp(prefix="bench-structured-"))
    print(f"load average before: {open('/proc/loadavg').read().split()[:3]}; batch {args.batch}, "
          f"threads {args.threads}")
    print("| model | params dense -> pruned | NumPy ms dense / pruned (ratio) | onnxruntime ms dense / pruned (ratio) |")
    print("|---|---|---|---|")
    for name, arch in (("ResNet", resnet_fashion_mnist.ARCH), ("MobileNet", mobilenet_fashion_mnist.ARCH),
                       ("autoencoder", autoencoder_fashion_mnist.ARCH)):
        dense = pfc.parse(arch, seed=0)
        pruned = pfc.prune_structured(dense, 0.5)
        cells = []
        for run in ("numpy", "ort"):
            ms = []
            for tag, model in (("dense", dense), ("pruned", pruned)):
                if run == "numpy":
                    ms.append(_median_ms(lambda: pfc.predict(model, x, threads=args.threads), args.repeat))
                else:
                    path = pfc.export_onnx(model, out / f"{name}_{tag}.onnx")
                    pred = pfc.Predictor(str(path), threads=args.threads)
                    ms.append(_median_ms(lambda: pred.predict(x), args.repeat))
            cells.append(f"{ms[0]:.1f} / {ms[1]:.1f} ({ms[0] / ms[1]:.2f}x)")
        print(f"| {name} | {dense.nparams():,} -> {pruned.nparams():,} | {cells[0]} | {cells[1]} |")
    print(f"load average after: {open('/proc/loadavg').read().split()[:3]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
