"""Shared steps of the sequence-model examples (lstm_fashion_mnist.py, gru_fashion_mnist.py).

Sequential Fashion-MNIST: each 28x28 image is a sequence of 28 rows of 28 features, ``(N, 28, 28)`` batch-first
(Flux's ``(28, 28, N)`` = ``(features, len, batch)``). The model, in Flux syntax (Flux >= 0.15)::

    Chain(LSTM(28 => 64), flatten, Dense(1792 => 10))        # or GRU(28 => 64)

``flatten`` hands every hidden state to the classifier (``Flux.flatten`` of ``(64, 28, N)``), which keeps the
model expressible in plain Flux syntax (``x -> x[:, end, :]`` would need a Julia closure).

Steps, each printing its measurement: train (Adam); structured pruning of 50% of the hidden units, coupled
across the LSTM's four gates / the GRU's three (``pfc.prune_hidden_units``), before and after fine-tuning;
ONNX fp32 export to the ONNX ``LSTM``/``GRU`` op (onnxruntime vs NumPy max |diff|); four ONNX forms compared
in onnxruntime (accuracy; latency at batch 256 and 1, 1 and 2 threads, see :func:`int8_comparison`): fp32 op,
fp32 unrolled, int8 from ``pfc.quantize(..., activations="dynamic")`` (integer products for every step) and
onnxruntime's ``quantize_dynamic`` (the anchor); JLD2 round trip.

Measured (defaults: 6 epochs on all 60,000 images, batch 64, Adam(2e-3); 1 fine-tuning epoch; 2 shared cores,
one thread each)::

                             LSTM(28 => 64)              GRU(28 => 64)
    training                 391 s, 88.86%               331 s, 88.37%
    50% hidden units         41,738 -> 16,778 params     35,786 -> 14,826 params
      before / after FT      82.66% / 88.11% (-0.75)     79.58% / 88.53% (+0.16)
    ONNX fp32 vs NumPy       9.5e-06 abs                 1.1e-05 abs (logits up to ~20)

    int8 forms, 2026-11-29 run (load average ~10 on the shared 2-core machine: latencies are noisy; an idle
    re-run of benchmarks/bench_recurrent_int8.py is in benchmarks/results/sequence.md). Accuracy in
    onnxruntime; latency at batch 256, 1 / 2 threads:
      fp32 op                88.86%  20.5 / 28.1 ms      88.37%  14.3 / 49.6 ms
      fp32 unrolled          88.86%  27.2 / 59.6 ms      88.37%  13.9 / 29.7 ms
      int8 pfc               88.91%  17.6 / 29.3 ms      88.37%   7.7 / 20.4 ms
      int8 ORT (anchor)      88.91%  12.2 / 24.1 ms      88.41%  15.2 / 40.0 ms (GRU op stays float)
    batch 1 (1 thread): op forms 0.03-0.04 ms, unrolled forms 0.18-0.20 ms (per-node overhead of 28 steps).
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


def parse_args(description: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--out", default=None, help="output directory (default: a new temporary directory)")
    p.add_argument("--epochs", type=int, default=6, help="training epochs (default 6)")
    p.add_argument("--train", type=int, default=60000, help="training images used (default all 60,000)")
    p.add_argument("--hidden", type=int, default=64, help="hidden units (default 64)")
    p.add_argument("--finetune", type=int, default=1, help="fine-tuning epochs after pruning (default 1)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.out is None:
        args.out = tempfile.mkdtemp(prefix="pyflux-example-")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if FAST:
        args.train, args.epochs = min(args.train, 2000), min(args.epochs, 1)
    return args


def load_sequences(n_train: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    Xtr, ytr, Xte, yte = pfc.datasets.load("fashion-mnist")
    Xtr, Xte = Xtr[:, 0], Xte[:, 0]                      # (N, 28 rows = time steps, 28 features)
    if FAST:
        Xte, yte = Xte[:2000], yte[:2000]
    return Xtr[:n_train], ytr[:n_train], Xte, yte


def ort_session(path: Path, threads: int = 1):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads                   # the shared 2-core machine: 1 thread unless measuring 2
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def ort_predict(sess, X: np.ndarray, batch: int = 1000) -> np.ndarray:
    return np.concatenate([sess.run(None, {"input": X[i:i + batch]})[0] for i in range(0, len(X), batch)])


def latency_ms(sess, X: np.ndarray, repeats: int = 15, batch: int = 256) -> float:
    x = X[:batch]
    sess.run(None, {"input": x})
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        sess.run(None, {"input": x})
        times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times))


def int8_comparison(model, kind: str, out: Path, fp32: Path, Xte: np.ndarray, yte: np.ndarray) -> None:
    """Four ONNX forms of the trained model in onnxruntime: accuracy, and latency at batch 256 / 1, 1 / 2 threads.

    * fp32 op: the ONNX ``LSTM``/``GRU`` operator (the default export);
    * fp32 unrolled: the same model as one input-projection MatMul + per-step MatMul and gate nodes
      (``onnx_form = "unrolled"``), the fair float baseline of the int8 graph below;
    * int8 pfc: ``pfc.quantize(model, 8, granularity="per_channel", activations="dynamic")`` exported: integer
      products (DynamicQuantizeLinear + MatMulInteger) for the input projection, each step's recurrence and
      the Dense (compression/quantize_sequence.py);
    * int8 ORT (anchor): onnxruntime's ``quantize_dynamic`` of the fp32 op file (LSTM -> DynamicQuantizeLSTM;
      GRU stays float: onnxruntime has no integer GRU kernel).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic
    import onnx

    unrolled_model = model.copy()
    unrolled_model[0].onnx_form = "unrolled"
    files = {"fp32 op": fp32,
             "fp32 unrolled": Path(pfc.export_onnx(unrolled_model, out / f"{kind.lower()}_unrolled.onnx",
                                                   input_shape=(28, 28)))}
    q = pfc.quantize(model, 8, granularity="per_channel", activations="dynamic")
    files["int8 pfc"] = Path(pfc.export_onnx(q, out / f"{kind.lower()}_int8_pfc.onnx", input_shape=(28, 28)))
    files["int8 ORT"] = out / f"{kind.lower()}_int8_ort.onnx"
    quantize_dynamic(str(fp32), str(files["int8 ORT"]), weight_type=QuantType.QInt8)
    accs = {}
    print(f"int8 forms of {kind} in onnxruntime (latency: median of 15 runs; load average "
          f"{open('/proc/loadavg').read().split()[0] if os.path.exists('/proc/loadavg') else '?'}):")
    print(f"  {'form':<14} {'accuracy':>9} {'b256 1thr':>10} {'b256 2thr':>10} {'b1 1thr':>8} {'b1 2thr':>8}  "
          f"integer ops")
    for name, path in files.items():
        ops = sorted({n.op_type for n in onnx.load(str(path)).graph.node})
        integer_ops = [o for o in ops if "Integer" in o or o.startswith("DynamicQuantize")]
        s1 = ort_session(path, 1)
        accs[name] = float(np.mean(ort_predict(s1, Xte).argmax(axis=1) == yte))
        lat = [latency_ms(s1, Xte), latency_ms(ort_session(path, 2), Xte), latency_ms(s1, Xte, 200, 1),
               latency_ms(ort_session(path, 2), Xte, 200, 1)]
        print(f"  {name:<14} {100 * accs[name]:8.2f}% {lat[0]:8.2f}ms {lat[1]:8.2f}ms {lat[2]:6.3f}ms "
              f"{lat[3]:6.3f}ms  {', '.join(integer_ops) or '-'}")
    sim = pfc.accuracy(q, Xte, yte)
    print(f"int8 pfc: test accuracy {100 * accs['int8 pfc']:.2f}% in onnxruntime ({100 * sim:.2f}% simulated by "
          f"pfc.predict), change vs fp32 {100 * (accs['int8 pfc'] - accs['fp32 op']):+.2f} points; ORT max |diff| "
          f"vs simulation {np.abs(ort_predict(ort_session(files['int8 pfc']), Xte[:512]) - pfc.predict(q, Xte[:512])).max():.2e}")


def run(kind: str, args: argparse.Namespace) -> None:
    out = Path(args.out)
    Xtr, ytr, Xte, yte = load_sequences(args.train)
    h = args.hidden
    arch = f"Chain({kind}(28 => {h}), flatten, Dense({28 * h} => 10))"
    model = pfc.parse(arch, seed=args.seed)
    print(f"model: {model}  ({model.nparams():,} parameters)")
    t = time.time()
    pfc.fit(model, Xtr, ytr, epochs=args.epochs, batchsize=64, opt=pfc.Adam(2e-3), progress=False, seed=args.seed)
    acc = pfc.accuracy(model, Xte, yte)
    print(f"trained {args.epochs} epoch(s) on {len(Xtr):,} images in {time.time() - t:.0f} s: test accuracy "
          f"{100 * acc:.2f}%")

    small = pfc.prune_hidden_units(model, 0.5)
    rec = small.records[-1]
    before_ft = pfc.accuracy(small, Xte, yte)
    pfc.fit(small, Xtr, ytr, epochs=args.finetune, batchsize=64, opt=pfc.Adam(1e-3), progress=False,
            seed=args.seed + 1)
    after_ft = pfc.accuracy(small, Xte, yte)
    print(f"50% hidden units pruned (gate-coupled): {small}, {rec['params_before']:,} -> {rec['params_after']:,} "
          f"parameters; test accuracy {100 * before_ft:.2f}% before, {100 * after_ft:.2f}% after "
          f"{args.finetune} fine-tuning epoch(s) (change {100 * (after_ft - acc):+.2f} points)")

    fp32 = pfc.export_onnx(model, out / f"{kind.lower()}.onnx", input_shape=(28, 28))
    s32 = ort_session(Path(fp32))
    ref = pfc.predict(model, Xte[:512])
    got = s32.run(None, {"input": Xte[:512]})[0]
    rel = float(np.abs(got - ref).max() / np.abs(ref).max())
    print(f"ONNX fp32 ({kind} op): ORT vs NumPy max relative |diff| {rel:.2e} (<= 1e-5: {rel <= 1e-5})")

    int8_comparison(model, kind, out, Path(fp32), Xte, yte)

    pfc.save(out / f"{kind.lower()}.jld2", model)
    back = pfc.load(out / f"{kind.lower()}.jld2")
    same = all(np.array_equal(back.params()[k], v) for k, v in model.params().items())
    print(f"JLD2 round trip: architecture {str(back) == str(model)}, weights bit-exact {same}")
