"""Article snippet 6: model deployment (模型部署) — load("model.jld2"), predict(model, x) with x = rand(784).

Article (Julia)                                        This example (Python)
-----------------------------------------------------  ------------------------------------------------------
model = Chain(Dense(784, 128, relu),                    model = pfc.parse("Chain(Dense(784 => 128, relu), ...)")
              Dense(128, 64, relu), Dense(64, 10))          + trained, then pfc.save("model.jld2", model)
model = load("model.jld2")                              model = pfc.load("model.jld2")
function predict(model, x)                              def predict(model, x):
    return model(x)                                         return model(x)
end
x_test = rand(784)                                      x_test = rng.random(784, dtype=np.float32)
y_pred = predict(model, x_test)                         y_pred = predict(model, x_test)
                                                         # and deployed: pfc.Predictor("model.onnx").predict(x)

Corrections and readings:
* ``load("model.jld2")`` (JLD2/FileIO) returns a Dict of every variable in the file, not a model. The Flux way
  is ``jldsave("model.jld2"; model_state = Flux.state(model))`` to save and
  ``Flux.loadmodel!(model, JLD2.load("model.jld2", "model_state"))`` to load into a model of the same
  architecture — which is why the article builds the Chain first; its ``model = load(...)`` then throws that
  Chain away. ``pfc.save`` writes exactly that ``model_state`` (plus ``model_arch``, the Flux syntax), so
  ``pfc.load`` rebuilds the model unaided and Julia loads the same file with ``Flux.loadmodel!``.
* ``rand(784)`` is a Float64 vector; Flux's Float32 layers then warn ("Layer with Float32 parameters got
  Float64 input") and convert: use ``rand(Float32, 784)``. A single sample works (Dense accepts a vector); a
  batch is a 784xN matrix in Julia, (N, 784) here.
* ``y_pred`` is 10 logits; the predicted class is ``argmax(y_pred)`` (``argmax`` is 1-based in Julia).
* Deployment outside Julia: the same model exported to ONNX and run by ``pfc.Predictor`` (onnxruntime).

Measured: file sizes, the loaded model equals the saved one, predictions agree (NumPy vs onnxruntime), accuracy
of the loaded model, and single-sample latency of ``predict`` vs the ONNX Predictor.
"""
from __future__ import annotations

import os

import numpy as np

import _common as C
import pyflux_compress as pfc


def predict(model, x):
    """The article's deployment function."""
    return model(x)


def main() -> int:
    args = C.parse_args(__doc__.splitlines()[0])
    data = C.load_data()
    trained = C.trained_article_model(data, args.epochs, args.seed)
    jld2_path = os.path.join(args.out, "model.jld2")
    pfc.save(jld2_path, trained)

    model = pfc.load(jld2_path)                    # model = load("model.jld2")
    rng = np.random.default_rng(args.seed)
    x_test = rng.random(data.n_features, dtype=np.float32)  # x_test = rand(Float32, 784)
    y_pred = predict(model, x_test)                # y_pred = predict(model, x_test)
    print(f"loaded {model} from {jld2_path} ({os.path.getsize(jld2_path):,} bytes)")
    print(f"predict(model, rand(Float32, {data.n_features})) -> {y_pred.shape} logits, class {int(np.argmax(y_pred))}")

    same = all(np.array_equal(a, b) for (_, la), (_, lb) in zip(trained.walk(), model.walk())
               for a, b in zip(la.params().values(), lb.params().values()))
    onnx_path = os.path.join(args.out, "model.onnx")
    pfc.export_onnx(model, onnx_path)
    deployed = pfc.Predictor(onnx_path)
    y_ort = deployed.predict(x_test[None])[0]
    from_jld2 = pfc.Predictor(jld2_path)           # a Predictor also takes the .jld2 directly
    y_jld2 = from_jld2.predict(x_test[None])[0]
    x0, label = data.Xte[0], int(data.yte[0])
    print(f"test image 0: label {label}, predict -> {int(np.argmax(predict(model, x0)))}, "
          f"Predictor -> {int(np.argmax(deployed.predict(x0[None])[0]))}")

    C.table(("check", "value"), [
        ("loaded parameters identical to saved", same),
        ("max |predict - Predictor(.onnx)|", f"{np.max(np.abs(y_pred - y_ort)):.2e}"),
        ("max |predict - Predictor(.jld2)|", f"{np.max(np.abs(y_pred - y_jld2)):.2e}"),
        ("accuracy of the loaded model", C.pct(pfc.accuracy(model, data.Xte, data.yte))),
        (".jld2 / .onnx bytes", f"{os.path.getsize(jld2_path):,} / {os.path.getsize(onnx_path):,}"),
        ("p50 ms predict(model, x) (NumPy)", f"{C.p50_ms(lambda: predict(model, x_test)):.3f}"),
        ("p50 ms Predictor.predict(x) (onnxruntime)", f"{C.p50_ms(lambda: deployed.predict(x_test[None])):.3f}"),
    ])
    ok = same and np.allclose(y_pred, y_ort, rtol=1e-4, atol=1e-4)
    print(f"effect: the checkpoint round-trips exactly and the deployed ONNX model agrees: {ok}; "
          f"outputs in {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
