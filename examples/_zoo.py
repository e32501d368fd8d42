"""Shared pipeline of the layer-zoo reference models (ResNet, MobileNet-style, convolutional autoencoder).

Each step prints its measurement: train; int8 quantization (per-channel weights, calibrated activations);
50% structured pruning + fine-tuning; 80% unstructured magnitude pruning + fine-tuning; ONNX export
(onnxruntime vs NumPy); JLD2 save/load (bit-exact weights). Classifiers report test accuracy, the autoencoder
its reconstruction mean squared error (target = input).

``PYFLUX_EXAMPLE_FAST=1`` (the tests) trains on 2,000 images only, so the numbers then mean little.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import pyflux_compress as pfc

FAST = os.environ.get("PYFLUX_EXAMPLE_FAST", "") not in ("", "0")


def parse_args(description: str, epochs: int, train: int) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--out", default=None, help="output directory (default: a new temporary directory)")
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--train", type=int, default=train, help=f"training images used (default {train:,})")
    p.add_argument("--finetune", type=int, default=20000, help="images per fine-tuning epoch after pruning")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    args.out = Path(args.out or tempfile.mkdtemp(prefix="pyflux-zoo-"))
    args.out.mkdir(parents=True, exist_ok=True)
    return args


def run(arch: str, args: argparse.Namespace, *, autoencoder: bool = False, lr: float = 2e-3) -> None:
    """Build ``arch``, train on Fashion-MNIST and run every compression step, printing each measurement."""
    n_train, n_tune, n_test = (2000, 1000, 1000) if FAST else (args.train, args.finetune, 10000)
    Xtr, ytr, Xte, yte = pfc.datasets.load("fashion-mnist")
    Xtr, ytr, Xte, yte = Xtr[:n_train], ytr[:n_train], Xte[:n_test], yte[:n_test]
    print(f"data: fashion-mnist, {len(Xtr):,} training / {len(Xte):,} test images")
    loss = "mse" if autoencoder else "logitcrossentropy"
    ytr_, name = (Xtr, "reconstruction MSE") if autoencoder else (ytr, "test accuracy")

    def score(m: Any) -> str:
        if autoencoder:
            return f"{float(np.mean((pfc.predict(m, Xte) - Xte) ** 2)):.5f}"
        return f"{100 * pfc.accuracy(m, Xte, yte):.2f}%"

    def fit(m: Any, n: int, epochs: int, rate: float, seed: int) -> None:
        pfc.fit(m, Xtr[:n], ytr_[:n], epochs=epochs, batchsize=128, opt=pfc.Adam(rate), loss=loss, progress=False,
                seed=seed)

    model = pfc.parse(arch, seed=args.seed)
    print(f"model: {model}  ({model.nparams():,} parameters)")
    t0 = time.perf_counter()
    fit(model, len(Xtr), args.epochs, lr, args.seed)
    base = score(model)
    print(f"trained {args.epochs} epoch(s) in {time.perf_counter() - t0:.0f} s: {name} {base}")

    q8 = pfc.quantize(model, bits=8, granularity="per_channel", calibration=Xtr[:512])
    print(f"int8 (per-channel weights, calibrated activations): {name} {score(q8)} (float: {base})")

    s50 = pfc.prune_structured(model, 0.5)
    before = score(s50)
    fit(s50, n_tune, 1, lr / 4, args.seed + 1)
    print(f"50% structured: {model.nparams():,} -> {s50.nparams():,} parameters; {s50}")
    print(f"50% structured: {name} {before} before, {score(s50)} after fine-tuning")

    u80 = pfc.prune(model, 0.8)
    before = score(u80)
    fit(u80, n_tune, 1, lr / 4, args.seed + 1)
    weights = [a for k, a in u80.params().items() if k.endswith("weight")]
    sparsity = 1 - sum(int(np.count_nonzero(a)) for a in weights) / sum(a.size for a in weights)
    print(f"80% unstructured: weight sparsity {sparsity:.3f}; {name} {before} before, {score(u80)} after "
          "fine-tuning")

    onnx_path = args.out / "model.onnx"
    pfc.export_onnx(model, onnx_path)
    y_ort, y_np = pfc.Predictor(str(onnx_path), threads=1).predict(Xte[:256]), model(Xte[:256])
    rel = float(np.abs(y_ort - y_np).max() / np.abs(y_np).max())
    print(f"ONNX fp32: ORT vs NumPy max relative |diff| {rel:.2e} (<= 1e-5: {rel <= 1e-5})")

    jld = args.out / "model.jld2"
    pfc.save(jld, model)
    back = pfc.load(jld)
    exact = all(np.array_equal(a, b) for a, b in zip(model.params().values(), back.params().values()))
    print(f"JLD2 round trip: architecture {str(back) == str(model)}, weights bit-exact {exact}")
