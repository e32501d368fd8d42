"""A small vision transformer on Fashion-MNIST patches: MultiHeadAttention + LayerNorm + SkipConnection.

Each 28x28 image is cut into 16 patches of 7x7 (row-major patch order), each patch a token of 49 pixels plus a
16-way one-hot of its position, so ``Dense(65 => dim)`` is the patch embedding *and* a learned positional
embedding (its last 16 columns), in plain Flux syntax. Data ``(N, 16, 65)`` batch-first = Flux
``(65, 16, N)``. The model (Flux syntax, pre-norm encoder blocks)::

    Chain(Dense(65 => 64),
          SkipConnection(Chain(LayerNorm(64), MultiHeadAttention(64; nheads=4), first), +),
          SkipConnection(Chain(LayerNorm(64), Dense(64 => 128, gelu), Dense(128 => 64)), +),
          LayerNorm(64), flatten, Dense(1024 => 10))

``first`` is Julia's ``Base.first``: Flux's MultiHeadAttention returns ``(y, α)`` and a Flux Chain applies
``first`` to that tuple (Flux 0.14-0.16 has no dedicated read-out layer). Steps, each printing its numbers:
train (Adam), ONNX fp32 export (MatMul / Reshape / Transpose / Softmax) with onnxruntime parity, whole-head
pruning (``pfc.prune_heads``: half the heads by coupled q/k/v/out norm) before / after
fine-tuning, int8 with onnxruntime's dynamic quantizer (MatMul -> MatMulInteger), ``pfc.lowrank`` of the
Dense layers it reaches, sizes of each, JLD2 round trip. ``PYFLUX_EXAMPLE_FAST=1`` (the test) trains on 2,000
images for one epoch (accuracy then is low).

Measured (dim 64, 4 heads, 1 block, 47,818 parameters; all 60,000 images, batch 64, Adam(1e-3); 2 shared
cores, one thread; the fine-tuning runs used 20,000 images for one epoch)::

    test accuracy per epoch     85.70, 86.69, 86.87, 87.29, 87.18, 88.29, 88.04, 88.10 % (epochs 1-8, ~45-80 s each)
    ONNX fp32 vs NumPy          max 1.1e-05 absolute on logits up to 22.4 (5.1e-07 relative; NumPy fp32 itself
                                is 1.1e-05 from a float64 forward); argmax identical on all 10,000
    whole heads 4 -> 2          191,272 -> 158,504 bytes fp32; 81.93% before, 87.80% after fine-tuning
    int8 (quantize_dynamic)     88.18% vs fp32 88.10% in onnxruntime; file 196,504 -> 62,261 bytes
    pfc.quantize int8/channel   88.06% (NumPy)
    low-rank, quarter rank      6 projections (q/k/v/out, feed-forward): 47,818 -> 29,386 parameters;
                                71.44% before, 86.88% after fine-tuning
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
PATCH = 7


def patches(images: np.ndarray) -> np.ndarray:
    """``(N, 1, 28, 28)`` -> ``(N, 16, 49 + 16)``: 7x7 patches in row-major order, each with its position
    one-hot appended."""
    n = len(images)
    g = 28 // PATCH
    x = images.reshape(n, g, PATCH, g, PATCH).transpose(0, 1, 3, 2, 4).reshape(n, g * g, PATCH * PATCH)
    pos = np.broadcast_to(np.eye(g * g, dtype=np.float32), (n, g * g, g * g))
    return np.ascontiguousarray(np.concatenate([x, pos], axis=2), dtype=np.float32)


def architecture(dim: int, heads: int, blocks: int) -> str:
    block = (f"SkipConnection(Chain(LayerNorm({dim}), MultiHeadAttention({dim}; nheads={heads}), first), +), "
             f"SkipConnection(Chain(LayerNorm({dim}), Dense({dim} => {2 * dim}, gelu), "
             f"Dense({2 * dim} => {dim})), +)")
    return (f"Chain(Dense({PATCH * PATCH + 16} => {dim}), {', '.join([block] * blocks)}, LayerNorm({dim}), "
            f"flatten, Dense({16 * dim} => 10))")


def nbytes(model: pfc.Layer) -> int:
    return int(sum(a.nbytes for a in model.params().values()))


def ort_accuracy(path: Path, X: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    out = np.concatenate([s.run(None, {"input": X[i:i + 1000]})[0] for i in range(0, len(X), 1000)])
    return float(np.mean(out.argmax(axis=1) == y)), out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None, help="output directory (default: a new temporary directory)")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--train", type=int, default=60000, help="training images used (default all 60,000)")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--blocks", type=int, default=1)
    p.add_argument("--finetune", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if FAST:
        args.train, args.epochs, args.finetune = min(args.train, 2000), 1, min(args.finetune, 1)
    out = Path(args.out or tempfile.mkdtemp(prefix="pyflux-example-"))
    out.mkdir(parents=True, exist_ok=True)

    Xtr, ytr, Xte, yte = pfc.datasets.load("fashion-mnist")
    if FAST:
        Xte, yte = Xte[:2000], yte[:2000]
    Xtr, ytr, Xte = patches(Xtr[:args.train]), ytr[:args.train], patches(Xte)
    model = pfc.parse(architecture(args.dim, args.heads, args.blocks), seed=args.seed)
    print(f"model: {model}  ({model.nparams():,} parameters, {nbytes(model):,} bytes fp32)")
    t = time.time()
    pfc.fit(model, Xtr, ytr, epochs=args.epochs, batchsize=64, opt=pfc.Adam(1e-3), progress=False, seed=args.seed)
    acc = pfc.accuracy(model, Xte, yte)
    print(f"trained {args.epochs} epoch(s) on {len(Xtr):,} images in {time.time() - t:.0f} s: test accuracy "
          f"{100 * acc:.2f}%")

    fp32 = pfc.export_onnx(model, out / "vit.onnx", input_shape=Xte.shape[1:])
    acc32, got = ort_accuracy(Path(fp32), Xte, yte)
    ref = pfc.predict(model, Xte)
    diff = float(np.abs(got - ref).max())
    rel = diff / float(np.abs(ref).max())
    # logits reach ~20, where a float32 ulp is 2e-6: the relative figure is the meaningful one
    print(f"ONNX fp32: onnxruntime vs NumPy max relative |diff| {rel:.2e} (<= 1e-5: {rel <= 1e-5}), absolute "
          f"{diff:.2e}; accuracy {100 * acc32:.2f}%")

    half = pfc.prune_heads(model, 0.5)
    before_ft = pfc.accuracy(half, Xte, yte)
    pfc.fit(half, Xtr, ytr, epochs=args.finetune, batchsize=64, opt=pfc.Adam(5e-4), progress=False,
            seed=args.seed + 1)
    after_ft = pfc.accuracy(half, Xte, yte)
    print(f"whole heads pruned {args.heads} -> {max(1, round(args.heads / 2))} per block: {nbytes(model):,} -> "
          f"{nbytes(half):,} bytes; accuracy {100 * before_ft:.2f}% before, {100 * after_ft:.2f}% after "
          f"{args.finetune} fine-tuning epoch(s) (change {100 * (after_ft - acc):+.2f} points)")

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    int8 = out / "vit_int8.onnx"
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
    ops = sorted({n.op_type for n in onnx.load(str(int8)).graph.node if "Integer" in n.op_type})
    acc8, _ = ort_accuracy(int8, Xte, yte)
    print(f"int8 (onnxruntime quantize_dynamic, integer ops {ops}): accuracy {100 * acc8:.2f}% (change "
          f"{100 * (acc8 - acc32):+.2f} points); file {os.path.getsize(fp32):,} -> {os.path.getsize(int8):,} bytes")

    # the attention projections and feed-forward Dense layers (inside SkipConnections) at a quarter of full
    # rank (half rank saves nothing on a square matrix: r * (in + out) = in * out)
    ranks = {path: max(1, min(layer.weight.shape) // 4) for path, layer in pfc.modules(model)
             if isinstance(layer, pfc.Dense) and ".layers." in path}
    low = pfc.lowrank(model, rank=ranks)
    rec = low.records[-1]
    acc_low = pfc.accuracy(low, Xte, yte)
    pfc.fit(low, Xtr, ytr, epochs=args.finetune, batchsize=64, opt=pfc.Adam(5e-4), progress=False,
            seed=args.seed + 2)
    print(f"low-rank (quarter rank) of {len(rec['per_layer'])} projections: {rec['params_before']:,} -> "
          f"{rec['params_after']:,} parameters ({4 * rec['params_after']:,} bytes); accuracy "
          f"{100 * acc_low:.2f}% before, {100 * pfc.accuracy(low, Xte, yte):.2f}% after {args.finetune} "
          "fine-tuning epoch(s)")

    pfc.save(out / "vit.jld2", model)
    back = pfc.load(out / "vit.jld2")
    same = all(np.array_equal(back.params()[k], v) for k, v in model.params().items())
    print(f"JLD2 round trip: architecture {str(back) == str(model)}, weights bit-exact {same}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
