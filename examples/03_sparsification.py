"""Article snippet 3: sparsification (稀疏化) at level 0.5.

Article (Julia)                                        This example (Python)
-----------------------------------------------------  ------------------------------------------------------
model = Chain(Dense(784, 128, relu),                    model = pfc.parse("Chain(Dense(784 => 128, relu), ...)")
              Dense(128, 64, relu), Dense(64, 10))          + trained
sparsity_level = 0.5                                    sparsity_level = 0.5
model[1].w = sparsity_level . model[1].w                sparse = pfc.sparsify(model, sparsity_level)

Corrections and readings:
* ``model[1].w`` is ``model[1].weight`` (the name since Flux 0.12/0.13), and Dense is an immutable struct:
  mutate the array in place (``.*=``) instead of assigning the field.
* Read literally, ``sparsity_level .* model[1].weight`` multiplies the weights by 0.5: that zeroes nothing
  (shown below as "literal reading"). The section's own definition — "set weights to 0 to reduce the number of
  parameters" — means: zero the 50% of weights with the smallest magnitude. ``pfc.sparsify(model, 0.5)`` does
  that for every weight matrix (the article's line touches only the first layer; ``include=`` restricts it).
  In Flux: ``t = quantile(abs.(vec(W)), 0.5); W .*= abs.(W) .> t``.
* Also shown: the semi-structured 2:4 pattern (2 nonzeros in every 4 consecutive inputs), the form sparse
  tensor cores accelerate.

Measured: per-layer sparsity, parameters, bytes as fp32 dense and as sparse CSR (at 50% CSR is *not* smaller:
each nonzero costs a 4-byte value plus a 4-byte column index), accuracy, accuracy after a masked fine-tune, and
numpy latency (unchanged: a dense matmul does not skip zeros).
"""
from __future__ import annotations

import numpy as np

import _common as C
import pyflux_compress as pfc


def main() -> int:
    args = C.parse_args(__doc__.splitlines()[0])
    data = C.load_data()
    model = C.trained_article_model(data, args.epochs, args.seed)
    sparsity_level = 0.5

    literal = model.copy()
    literal[0].weight *= sparsity_level            # what `0.5 .* model[1].weight` computes: a rescaling
    sparse = pfc.sparsify(model, sparsity_level)   # what the section describes: half the weights set to 0
    two_four = pfc.sparsify(model, sparsity_level, pattern="2:4")
    finetuned = sparse.copy()
    C.train(finetuned, data, epochs=1, seed=args.seed + 1)

    for path, layer in sparse.walk():
        if hasattr(layer, "weight"):
            print(f"  {path} {layer}: weight sparsity {C.pct(np.mean(layer.weight == 0))}")
    x1 = data.Xte[:1]
    rows = []
    for name, m in (("trained (dense)", model), ("literal reading: 0.5 .* W1", literal),
                    ("pfc.sparsify(model, 0.5)", sparse), ("+ fine-tuned 1 epoch (masks held)", finetuned),
                    ("pfc.sparsify(model, 0.5, pattern='2:4')", two_four)):
        total, nz = C.weights(m)
        s = C.dense_and_csr_bytes(m)
        rows.append((name, f"{total:,}", f"{nz:,}", C.pct(1 - nz / total), C.kib(s["fp32"]), C.kib(s["sparse"]),
                     C.pct(pfc.accuracy(m, data.Xte, data.yte)), f"{C.p50_ms(lambda: m(x1), 100):.3f}"))
    C.table(("model", "params", "nonzero", "sparsity", "fp32 dense", "sparse CSR", "accuracy",
             "p50 ms (numpy, batch 1)"), rows)
    w = two_four[0].weight
    groups = (w.reshape(w.shape[0], -1, 4) != 0).sum(axis=2)
    print(f"2:4 check: max nonzeros per group of 4 inputs in layer 1 = {groups.max()}")
    print(f"effect: half of the weights are zero; accuracy {C.pct(pfc.accuracy(model, data.Xte, data.yte))} -> "
          f"{C.pct(pfc.accuracy(sparse, data.Xte, data.yte))} (after fine-tuning "
          f"{C.pct(pfc.accuracy(finetuned, data.Xte, data.yte))}); the literal 0.5 .* W zeroes nothing")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
