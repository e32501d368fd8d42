"""Article snippet 5: model conversion (模型转换) to ONNX.

Article (Julia)                                        This example (Python)
-----------------------------------------------------  ------------------------------------------------------
model = Chain(Dense(784, 128, relu),                    model = pfc.parse("Chain(Dense(784 => 128, relu), ...)")
              Dense(128, 64, relu), Dense(64, 10))          + trained
onnx_model = convert(model, "ONNX")                     pfc.export_onnx(model, "model.onnx")
                                                         onnx_model = onnx.load("model.onnx")

Corrections and readings:
* ``convert(model, "ONNX")`` does not exist: Base.convert takes a *type* first, and Flux has no ONNX export.
  In Julia the exporters are separate packages (ONNXNaiveNASflux.jl's ``save``, or ONNX.jl); here
  ``pfc.export_onnx`` writes the file: Dense -> Gemm (Flux's (out, in) weight is exactly Gemm's transB=1
  layout), relu -> Relu, input ``input`` batch-first with a symbolic batch dimension, output ``output``.
* "Conversion" only matters if the converted model computes the same thing: we check it with ``onnx.checker``,
  run it in onnxruntime on the test set, compare with the NumPy forward, and read it back with
  ``pfc.import_onnx``.

Measured: .onnx file size vs fp32 parameter bytes, max |difference| ORT vs NumPy, accuracy through ORT,
onnxruntime p50 latency and throughput at batch 1 and 256.
"""
from __future__ import annotations

import os

import numpy as np
import onnx

import _common as C
import pyflux_compress as pfc
from pyflux_compress.deploy.report import p50_and_throughput


def main() -> int:
    args = C.parse_args(__doc__.splitlines()[0])
    data = C.load_data()
    model = C.trained_article_model(data, args.epochs, args.seed)

    path = os.path.join(args.out, "model.onnx")
    pfc.export_onnx(model, path)                   # onnx_model = convert(model, "ONNX"), done for real
    onnx_model = onnx.load(path)
    onnx.checker.check_model(onnx_model)
    ops = [n.op_type for n in onnx_model.graph.node]
    print(f"wrote {path}: {os.path.getsize(path):,} bytes, ops {ops}, opset "
          f"{onnx_model.opset_import[0].version}, IR {onnx_model.ir_version}; onnx.checker passed")

    pred = pfc.Predictor(path)
    y_ort = pred.predict(data.Xte)
    y_np = pfc.predict(model, data.Xte)
    diff = float(np.max(np.abs(y_ort - y_np)))
    acc_ort = float((y_ort.argmax(axis=1) == data.yte).mean())
    back = pfc.import_onnx(path)
    diff_back = float(np.max(np.abs(pfc.predict(back, data.Xte) - y_np)))
    print(f"import_onnx read back: {back}")

    stats = pred.benchmark(batch_sizes=(1, 256), seconds=1.0 if not C.FAST else 0.3)
    total, _ = C.weights(model)
    rows = []
    for bs in (1, 256):
        p50, thr = p50_and_throughput(stats, bs)
        rows.append((bs, f"{p50:.3f}", f"{thr:,.0f}"))
    C.table(("batch", "ORT p50 ms", "samples/s"), rows)
    print(f"effect: {total:,} parameters = {4 * total:,} fp32 bytes -> .onnx file {os.path.getsize(path):,} bytes; "
          f"ORT vs NumPy max |diff| {diff:.2e}; ORT accuracy {C.pct(acc_ort)} (NumPy "
          f"{C.pct(pfc.accuracy(model, data.Xte, data.yte))}); round trip max |diff| {diff_back:.2e}")
    return 0 if diff < 1e-3 and diff_back < 1e-4 else 1


if __name__ == "__main__":
    raise SystemExit(main())
