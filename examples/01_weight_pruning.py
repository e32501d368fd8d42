"""Article snippet 1: weight pruning (权重剪枝) — zero the first layer's weights with |w| <= 0.1.

Article (Julia)                                        This example (Python)
-----------------------------------------------------  ------------------------------------------------------
using Flux                                              import pyflux_compress as pfc
model = Chain(Dense(784, 128, relu),                    model = pfc.parse("Chain(Dense(784 => 128, relu),
              Dense(128, 64, relu), Dense(64, 10))          Dense(128 => 64, relu), Dense(64 => 10))")  + trained
weights_importance = abs.(model[1].w)                   importance = np.abs(model[0].weight)
threshold = 0.1                                         threshold = 0.1
pruned_weights = weights_importance .> threshold        keep = importance > threshold
model[1].w = pruned_weights . model[1].w                model[0].weight *= keep   (on a copy; + a mask)

Corrections real Flux needs:
* The field is ``weight``: Dense's fields were ``W``/``b`` until Flux 0.12 renamed them ``weight``/``bias`` (with
  a deprecation warning; the old names are gone since 0.13). A lowercase ``w`` never existed.
* ``pruned_weights . model[1].w`` is not Julia: the elementwise product is the broadcast ``.*``.
* Dense is an immutable struct, so ``model[1].weight = ...`` throws ``setfield!: immutable struct``; mutate the
  array in place instead: ``model[1].weight .*= abs.(model[1].weight) .> 0.1``.
* Julia indexes from 1 (``model[1]``); Python from 0 (``model[0]``); current Flux prints and documents
  ``Dense(784 => 128, relu)``; the article's ``Dense(784, 128, relu)`` still constructs the same layer.
* Pruning an *untrained* model is meaningless (the article never trains): we train first, and note that
  Flux's Glorot-uniform init bounds layer 1's weights by sqrt(6/(784+128)) = 0.081 < 0.1, so on a fresh model
  this threshold would remove every weight.
* Fine-tuning after pruning must keep the zeros: we attach a mask (``layer.masks["weight"]``) that
  ``pfc.fit`` re-applies after every step.

Measured: sparsity of layer 1, parameters, bytes (fp32 dense vs sparse CSR), accuracy before/after pruning and
after one epoch of masked fine-tuning, and numpy latency (a dense matmul does not get faster from zeros).
"""
from __future__ import annotations

import numpy as np

import _common as C
import pyflux_compress as pfc


def main() -> int:
    args = C.parse_args(__doc__.splitlines()[0])
    data = C.load_data()
    model = C.trained_article_model(data, args.epochs, args.seed)
    acc0 = pfc.accuracy(model, data.Xte, data.yte)

    # the article's lines, corrected
    pruned = model.copy()                          # pure: the trained model stays intact for comparison
    importance = np.abs(pruned[0].weight)          # weights_importance = abs.(model[1].weight)
    threshold = 0.1
    keep = importance > threshold                  # pruned_weights = weights_importance .> threshold
    pruned[0].weight *= keep                       # model[1].weight .*= pruned_weights
    pruned[0].masks["weight"] = keep               # fine-tuning keeps pruned weights at exactly zero

    layer_sparsity = 1 - keep.mean()
    acc1 = pfc.accuracy(pruned, data.Xte, data.yte)
    print(f"layer 1 {pruned[0]}: |w| > {threshold} keeps {keep.sum():,} of {keep.size:,} weights "
          f"-> sparsity {C.pct(layer_sparsity)} (Glorot bound of this layer: {np.sqrt(6 / sum(keep.shape)):.3f})")

    finetuned = pruned.copy()
    secs = C.train(finetuned, data, epochs=1, seed=args.seed + 1)
    assert np.all(finetuned[0].weight[~keep] == 0), "mask must hold through fine-tuning"
    acc2 = pfc.accuracy(finetuned, data.Xte, data.yte)

    x1 = data.Xte[:1]
    rows = []
    for name, m, acc in (("trained", model, acc0), ("pruned layer 1", pruned, acc1),
                         (f"+ fine-tuned 1 epoch ({secs:.1f} s)", finetuned, acc2)):
        total, nz = C.weights(m)
        s = C.dense_and_csr_bytes(m)
        rows.append((name, f"{total:,}", f"{nz:,}", C.kib(s["fp32"]), C.kib(s["sparse"]), C.pct(acc),
                     f"{C.p50_ms(lambda: m(x1)):.3f}"))
    C.table(("model", "params", "nonzero", "fp32 dense", "sparse CSR", "accuracy", "p50 ms (numpy, batch 1)"), rows)
    print(f"effect: {C.pct(layer_sparsity)} of layer 1 removed; accuracy {C.pct(acc0)} -> {C.pct(acc1)} "
          f"(pruned) -> {C.pct(acc2)} (fine-tuned); dense latency unchanged: zeros in a dense matrix cost the same")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
