"""Article snippet 4: model quantization (模型量化) to 8 bits.

Article (Julia)                                        This example (Python)
-----------------------------------------------------  ------------------------------------------------------
model = Chain(Dense(784, 128, relu),                    model = pfc.parse("Chain(Dense(784 => 128, relu), ...)")
              Dense(128, 64, relu), Dense(64, 10))          + trained
quantized_model = quantize(model, 8)                    q = pfc.quantize(model, bits=8,
                                                                      granularity="per_channel",
                                                                      calibration=X[:512])

Corrections and readings:
* Flux has no ``quantize`` function. ``pfc.quantize(model, 8)`` is what the line means: int8 weights with a
  float scale per output channel (symmetric, round-half-to-even), and — with calibration data — 8-bit input
  activations too, so onnxruntime can run integer kernels. (In Julia the package's twin is
  ``FluxCompress.quantize(model, 8)``, see julia/README.md.)
* Quantizing an untrained model measures nothing; we train first, then report the accuracy effect of the
  simulated integer arithmetic before anything is exported.

Measured: bytes as fp32 dense, int8 and in the compressed archive, accuracy fp32 vs int8 (and int4 for
comparison), and onnxruntime p50 latency of the fp32 and the int8 (QDQ) exports.
"""
from __future__ import annotations

import os

import _common as C
import pyflux_compress as pfc


def main() -> int:
    args = C.parse_args(__doc__.splitlines()[0])
    data = C.load_data()
    model = C.trained_article_model(data, args.epochs, args.seed)

    calib = data.Xtr[:512]
    q8 = pfc.quantize(model, bits=8, granularity="per_channel", calibration=calib)
    q4 = pfc.quantize(model, bits=4, granularity="per_channel")
    print(f"quantized: {q8}")

    fp32_path = os.path.join(args.out, "model_fp32.onnx")
    int8_path = os.path.join(args.out, "model_int8.onnx")
    pfc.export_onnx(model, fp32_path)
    pfc.export_onnx(q8, int8_path)
    x1 = data.Xte[:1]
    p_fp32, p_int8 = pfc.Predictor(fp32_path, threads=1), pfc.Predictor(int8_path, threads=1)
    lat = {name: C.p50_ms(lambda p=p: p.predict(x1)) for name, p in (("fp32", p_fp32), ("int8", p_int8))}
    acc_ort = float((p_int8.predict(data.Xte).argmax(axis=1) == data.yte).mean())

    s32, s8, s4 = C.sizes(model), C.sizes(q8), C.sizes(q4)
    acc32, acc8, acc4 = (pfc.accuracy(m, data.Xte, data.yte) for m in (model, q8, q4))
    C.table(("model", "fp32 dense", "int8", "archive", ".onnx file", "accuracy", "ORT p50 ms (batch 1)"), [
        ("float32", C.kib(s32["fp32"]), "", C.kib(s32["archive"]), C.kib(os.path.getsize(fp32_path)),
         C.pct(acc32), f"{lat['fp32']:.3f}"),
        ("int8 per-channel, calibrated", "", C.kib(s8["int8"]), C.kib(s8["archive"]),
         C.kib(os.path.getsize(int8_path)), f"{C.pct(acc8)} (ORT: {C.pct(acc_ort)})", f"{lat['int8']:.3f}"),
        ("int4 per-channel (weights only)", "", "", C.kib(s4["archive"]), "", C.pct(acc4), ""),
    ])
    print(f"effect: int8 stores the weights in {s8['int8'] / s32['fp32']:.2f}x the fp32 bytes "
          f"({s32['fp32'] / s8['int8']:.2f}x smaller); accuracy {C.pct(acc32)} -> {C.pct(acc8)} "
          f"(drop {100 * (acc32 - acc8):.2f} points); .onnx file {os.path.getsize(fp32_path):,} -> "
          f"{os.path.getsize(int8_path):,} bytes; outputs in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
