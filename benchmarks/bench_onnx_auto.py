"""``export_onnx(format="auto")``: which ONNX form is fastest on onnxruntime's CPU kernels, per model and layer.

Part 1 (issue 16 acceptance): ``pfc.choose_format`` on

* the LeNet CNN ``Chain(Conv((5, 5), 1 => 6, relu; pad=2), MaxPool((2, 2)), Conv((5, 5), 6 => 16, relu),
  MaxPool((2, 2)), flatten, Dense(400 => 120, relu), Dense(120 => 84, relu), Dense(84 => 10))`` trained one
  epoch on 10,000 Fashion-MNIST images, and
* the 14.7M-weight MLP ``Chain(Dense(4096 => 2048, relu), Dense(2048 => 2048, relu), Dense(2048 => 1024, relu),
  Dense(1024 => 10))`` trained one epoch on 5,000 Fashion-MNIST images upscaled to 64x64 (= 4096 inputs),

at batch 256 (``--batch``) with ``--threads`` onnxruntime threads, accuracy checked on 1,000 test images
(tolerance: at most 1% of top-1 predictions change). It prints the choice and every candidate's latency,
then re-measures the chosen form against fp32 in fresh interleaved rounds: target "no slower than fp32".

Part 2 (the table in docs/deployment.md): fp32 vs dynamic vs QDQ int8 latency of single layers at batch 1 and
256, so the docs can say which form is faster for which layer.

    python benchmarks/bench_onnx_auto.py [--threads 1] [--batch 256] [--seconds 4] [--out FILE.md]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

LENET = ("Chain(Conv((5, 5), 1 => 6, relu; pad=2), MaxPool((2, 2)), Conv((5, 5), 6 => 16, relu), MaxPool((2, 2)), "
         "flatten, Dense(400 => 120, relu), Dense(120 => 84, relu), Dense(84 => 10))")
MLP = "Chain(Dense(4096 => 2048, relu), Dense(2048 => 2048, relu), Dense(2048 => 1024, relu), Dense(1024 => 10))"
LAYERS = [  # (label, Flux syntax, per-sample input shape)
    ("Dense(4096 => 2048)", "Chain(Dense(4096 => 2048, relu))", (4096,)),
    ("Dense(400 => 120)", "Chain(Dense(400 => 120, relu))", (400,)),
    ("Conv 5x5 1=>6 pad 2, 28x28", "Chain(Conv((5, 5), 1 => 6, relu; pad=2))", (1, 28, 28)),
    ("Conv 5x5 6=>16, 14x14", "Chain(Conv((5, 5), 6 => 16, relu))", (6, 14, 14)),
    ("Conv 3x3 32=>64 pad 1, 28x28", "Chain(Conv((3, 3), 32 => 64, relu; pad=1))", (32, 28, 28)),
]


def upscale64(X: np.ndarray) -> np.ndarray:
    """(N, 1, 28, 28) -> (N, 4096): each pixel doubled in both directions, padded to 64x64."""
    big = np.repeat(np.repeat(X[:, 0], 2, axis=1), 2, axis=2)  # (N, 56, 56)
    return np.ascontiguousarray(np.pad(big, ((0, 0), (4, 4), (4, 4))).reshape(len(X), -1), dtype=np.float32)


def interleaved(sessions: dict, x: np.ndarray, seconds: float, rounds: int = 7) -> dict[str, list[float]]:
    """Median-per-call samples (s) of every session, rounds interleaved with alternating order."""
    for s in sessions.values():
        s.run(None, {"input": x})
    t0 = time.perf_counter()
    next(iter(sessions.values())).run(None, {"input": x})
    calls = max(1, min(200, int(seconds / rounds / len(sessions) / max(time.perf_counter() - t0, 1e-6))))
    out: dict[str, list[float]] = {k: [] for k in sessions}
    for r in range(rounds):
        for k in (list(sessions) if r % 2 == 0 else list(reversed(sessions))):
            t0 = time.perf_counter()
            for _ in range(calls):
                sessions[k].run(None, {"input": x})
            out[k].append((time.perf_counter() - t0) / calls)
    return out


def part1(name: str, model, fp32_model, data: np.ndarray, args) -> list[str]:
    import onnxruntime as ort

    import pyflux_compress as pfc
    from pyflux_compress.io.onnx import to_onnx_model

    t0 = time.perf_counter()
    c = pfc.choose_format(model, data, batch_size=args.batch, threads=args.threads, tolerance=0.01,
                          seconds=args.seconds)
    took = time.perf_counter() - t0
    lines = [f"### {name}: batch {args.batch}, {args.threads} onnxruntime thread(s)", "",
             f"choose_format took {took:.1f} s; **chosen: {c.label}** (format={c.format!r})", "", c.table(), ""]
    # fresh re-measurement: chosen vs fp32
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = args.threads, 1
    sessions = {"chosen": ort.InferenceSession(to_onnx_model(c.model, format=c.format).SerializeToString(), opts,
                                               providers=["CPUExecutionProvider"]),
                "fp32": ort.InferenceSession(to_onnx_model(fp32_model).SerializeToString(), opts,
                                             providers=["CPUExecutionProvider"])}
    x = data[np.arange(args.batch) % len(data)]
    s = interleaved(sessions, x, args.seconds)
    ratios = [a / b for a, b in zip(s["chosen"], s["fp32"])]
    med = statistics.median(ratios)
    lines += [f"re-measured (fresh sessions, {len(ratios)} interleaved rounds): chosen "
              f"{statistics.median(s['chosen']) * 1e3:.3f} ms vs fp32 {statistics.median(s['fp32']) * 1e3:.3f} ms; "
              f"latency ratio chosen/fp32 median {med:.3f} (per round {' '.join(f'{v:.2f}' for v in ratios)}); "
              f"no slower than fp32: {'yes' if med <= 1.02 else 'NO'}"
              + (" (the same form: fp32 was chosen)" if c.label == "fp32" else ""), ""]
    return lines


def part2(args) -> list[str]:
    import pyflux_compress as pfc

    rng = np.random.default_rng(0)
    lines = [f"### Single layers: ms per call, {args.threads} thread(s) (random Glorot weights, random inputs)", "",
             "| layer | batch | fp32 | dynamic int8 | QDQ int8 | fastest |", "|---|---|---|---|---|---|"]
    for label, arch, shape in LAYERS:
        model = pfc.parse(arch, seed=0)
        data = rng.random((64, *shape), dtype=np.float32)
        for batch in (1, 256):
            c = pfc.choose_format(model, data, batch_size=batch, threads=args.threads, tolerance=1.0,
                                  seconds=max(1.0, args.seconds / 2))
            lat = c.latency_ms
            best = min(lat, key=lat.get)
            lines.append(f"| {label} | {batch} | {lat['fp32']:.3f} | {lat['dynamic']:.3f} | {lat['qdq']:.3f} | "
                         f"{best} ({lat['fp32'] / lat[best]:.2f}x fp32) |")
    return lines + [""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=4.0, help="latency budget per choose_format call")
    ap.add_argument("--skip-layers", action="store_true", help="only part 1")
    ap.add_argument("--out")
    args = ap.parse_args()
    import onnxruntime as ort

    import pyflux_compress as pfc

    lines = ["## bench_onnx_auto: export_onnx(format='auto')", "",
             f"onnxruntime {ort.__version__}, CPUExecutionProvider; load average before: "
             f"{' '.join(f'{v:.1f}' for v in os.getloadavg())} on {os.cpu_count()} cores", ""]
    print("\n".join(lines), flush=True)
    Xtr, ytr, Xte, _ = pfc.datasets.load("fashion-mnist")

    lenet = pfc.parse(LENET, seed=0)
    pfc.fit(lenet, Xtr[:10000], ytr[:10000], epochs=1, batchsize=128, progress=False, threads=args.threads)
    part = part1("LeNet CNN", lenet, lenet, np.ascontiguousarray(Xte[:1000]), args)
    print("\n".join(part), flush=True)
    lines += part

    mlp = pfc.parse(MLP, seed=0)
    pfc.fit(mlp, upscale64(Xtr[:5000]), ytr[:5000], epochs=1, batchsize=128, progress=False, threads=args.threads)
    part = part1("14.7M-weight MLP", mlp, mlp, upscale64(Xte[:1000]), args)
    print("\n".join(part), flush=True)
    lines += part

    if not args.skip_layers:
        part = part2(args)
        print("\n".join(part), flush=True)
        lines += part
    lines.append(f"load average after: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print(lines[-1])
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
