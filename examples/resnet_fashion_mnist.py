"""A small ResNet (SkipConnection + BatchNorm + GlobalMeanPool) on Fashion-MNIST, compressed end to end.

The model, in Flux syntax (the same text builds it in Julia with ``using Flux``)::

    Chain(Conv((3, 3), 1 => 16, relu; pad=1, stride=2),                         # 28x28 -> 14x14
          SkipConnection(Chain(Conv((3, 3), 16 => 16; pad=1), BatchNorm(16, relu),
                               Conv((3, 3), 16 => 16; pad=1), BatchNorm(16)), +), relu,
          MaxPool((2, 2)), Conv((3, 3), 16 => 32, relu; pad=1),               # 14x14 -> 7x7
          SkipConnection(Chain(Conv((3, 3), 32 => 32; pad=1), BatchNorm(32, relu),
                               Conv((3, 3), 32 => 32; pad=1), BatchNorm(32)), +), relu,
          GlobalMeanPool(), flatten, Dense(32 => 10))

Steps, each printing test accuracy: train (Adam); int8 quantization (per-channel weights, calibrated
activations); 50% structured pruning (the residual stream keeps its width: channels added by ``+`` are
coupled, so the blocks' inner channels shrink) + fine-tuning; 80% unstructured magnitude pruning +
fine-tuning; ONNX export (onnxruntime vs NumPy max |diff|); JLD2 save/load (bit-exact weights).

Speed: NumPy training on 2 shared cores takes minutes per epoch at full size; ``--train`` / ``--epochs``
shrink it and ``PYFLUX_EXAMPLE_FAST=1`` (the test) trains on 2,000 images only (accuracy then is low).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

import pyflux_compress as pfc

FAST = os.environ.get("PYFLUX_EXAMPLE_FAST", "") not in ("", "0")
ARCH = ("Chain(Conv((3, 3), 1 => 16, relu; pad=1, stride=2), "
        "SkipConnection(Chain(Conv((3, 3), 16 => 16; pad=1), BatchNorm(16, relu), Conv((3, 3), 16 => 16; pad=1), "
        "BatchNorm(16)), +), relu, MaxPool((2, 2)), Conv((3, 3), 16 => 32, relu; pad=1), "
        "SkipConnection(Chain(Conv((3, 3), 32 => 32; pad=1), BatchNorm(32, relu), Conv((3, 3), 32 => 32; pad=1), "
        "BatchNorm(32)), +), relu, GlobalMeanPool(), flatten, Dense(32 => 10))")


def pct(a: float) -> str:
    return f"{100 * a:.2f}%"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None, help="output directory (default: a new temporary directory)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--train", type=int, default=60000, help="training images used (default: all 60,000)")
    p.add_argument("--finetune", type=int, default=20000, help="images per fine-tuning epoch after pruning")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="pyflux-resnet-"))
    out.mkdir(parents=True, exist_ok=True)
    n_train, n_tune, n_test = (2000, 1000, 1000) if FAST else (args.train, args.finetune, 10000)

    Xtr, ytr, Xte, yte = pfc.datasets.load("fashion-mnist")
    Xtr, ytr, Xte, yte = Xtr[:n_train], ytr[:n_train], Xte[:n_test], yte[:n_test]
    print(f"data: fashion-mnist, {len(Xtr):,} training / {len(Xte):,} test images")

    model = pfc.parse(ARCH, seed=args.seed)
    print(f"model: {model}  ({model.nparams():,} parameters)")
    t0 = time.perf_counter()
    pfc.fit(model, Xtr, ytr, epochs=args.epochs, batchsize=128, opt=pfc.Adam(2e-3), progress=False, seed=args.seed)
    acc = pfc.accuracy(model, Xte, yte)
    print(f"trained {args.epochs} epoch(s) in {time.perf_counter() - t0:.0f} s: test accuracy {pct(acc)}")

    q8 = pfc.quantize(model, bits=8, granularity="per_channel", calibration=Xtr[:512])
    acc8 = pfc.accuracy(q8, Xte, yte)
    print(f"int8 (per-channel weights, calibrated activations): test accuracy {pct(acc8)} "
          f"(change {100 * (acc8 - acc):+.2f} points)")

    def finetune(m):
        pfc.fit(m, Xtr[:n_tune], ytr[:n_tune], epochs=1, batchsize=128, opt=pfc.Adam(5e-4), progress=False,
                seed=args.seed + 1)
        return m

    s50 = pfc.prune_structured(model, 0.5)
    before = pfc.accuracy(s50, Xte, yte)
    finetune(s50)
    print(f"50% structured: {model.nparams():,} -> {s50.nparams():,} parameters; {s50}")
    print(f"50% structured: test accuracy {pct(before)} before, {pct(pfc.accuracy(s50, Xte, yte))} after "
          "fine-tuning")

    u80 = pfc.prune(model, 0.8)
    before = pfc.accuracy(u80, Xte, yte)
    finetune(u80)
    nz = sum(int(np.count_nonzero(a)) for k, a in u80.params().items() if k.endswith("weight"))
    tot = sum(a.size for k, a in u80.params().items() if k.endswith("weight"))
    print(f"80% unstructured: weight sparsity {1 - nz / tot:.3f}; test accuracy {pct(before)} before, "
          f"{pct(pfc.accuracy(u80, Xte, yte))} after fine-tuning")

    onnx_path = out / "resnet.onnx"
    pfc.export_onnx(model, onnx_path)
    pred = pfc.Predictor(str(onnx_path), threads=1)
    y_ort, y_np = pred.predict(Xte[:256]), model(Xte[:256])
    rel = float(np.abs(y_ort - y_np).max() / np.abs(y_np).max())
    print(f"ONNX fp32: ORT vs NumPy max relative |diff| {rel:.2e} (<= 1e-5: {rel <= 1e-5})")

    jld = out / "resnet.jld2"
    pfc.save(jld, model)
    back = pfc.load(jld)
    exact = all(np.array_equal(a, b) for a, b in zip(model.params().values(), back.params().values()))
    print(f"JLD2 round trip: architecture {str(back) == str(model)}, weights bit-exact {exact}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
