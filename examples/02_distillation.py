"""Article snippet 2: knowledge distillation (知识蒸馏) — the 784-128-64-10 teacher into a 784-64-10 student.

Article (Julia)                                        This example (Python)
-----------------------------------------------------  ------------------------------------------------------
large_model = Chain(Dense(784, 128, relu),              teacher = pfc.parse("Chain(Dense(784 => 128, relu),
                    Dense(128, 64, relu), Dense(64, 10))    Dense(128 => 64, relu), Dense(64 => 10))")  + trained
small_model = Chain(Dense(784, 64, relu), Dense(64, 10)) student = pfc.parse("Chain(Dense(784 => 64, relu),
                                                             Dense(64 => 10))")
large_output = large_model(x)                           (inside pfc.distill, per mini-batch of X)
small_output = small_model(x)                           (inside pfc.distill)
soft_labels = softmax(large_output)                     (inside pfc.distill, temperature=1)
loss = Flux.mse(small_output, soft_labels)              pfc.distill(teacher, student, X, loss="mse",
                                                                    temperature=1.0)

Corrections and readings:
* ``x`` is never defined in the article; here it is the training images, in mini-batches.
* The article computes one loss and stops: no gradient, no optimiser, no training loop. ``pfc.distill`` runs
  the loop (Adam, mini-batches, epochs); in Flux that is ``Flux.train!`` / ``Flux.withgradient`` +
  ``Optimisers.update!`` over the student only.
* The article's loss compares the student's raw outputs (logits) with probabilities — an odd but trainable
  target; we run it as written ("article MSE variant"), with no labels. For comparison: Hinton et al. (2015),
  KL divergence of temperature-softened outputs (T = 4, scaled by T^2) blended with cross-entropy on labels
  (alpha = 0.9), and the same student trained on labels alone (same epochs, same seed).

Measured: parameters and bytes of teacher and student, accuracy of each student, numpy latency at batch 1.
"""
from __future__ import annotations

import _common as C
import pyflux_compress as pfc

STUDENT = "Chain(Dense({n} => 64, relu), Dense(64 => 10))"


def main() -> int:
    args = C.parse_args(__doc__.splitlines()[0])
    data = C.load_data()
    teacher = C.trained_article_model(data, max(args.epochs, 1), args.seed)
    epochs = C.epochs_for(data, max(args.epochs, 1))

    def fresh_student():
        return pfc.parse(STUDENT.format(n=data.n_features), seed=args.seed + 1)

    results = []
    # 1. the article: MSE between the student's output and softmax(teacher's output), no labels
    s_mse = pfc.distill(teacher, fresh_student(), data.Xtr, None, temperature=1.0, loss="mse", epochs=epochs,
                        batchsize=128, opt=pfc.Adam(1e-3), seed=args.seed, progress=False)
    results.append(("student, article MSE vs softmax(teacher)", s_mse))
    # 2. Hinton et al.: KL at T=4 (x T^2) blended with cross-entropy on labels
    s_kd = pfc.distill(teacher, fresh_student(), data.Xtr, data.ytr, temperature=4.0, alpha=0.9, loss="kl",
                       epochs=epochs, batchsize=128, opt=pfc.Adam(1e-3), seed=args.seed, progress=False)
    results.append(("student, Hinton KD (T=4, alpha=0.9)", s_kd))
    # 3. baseline: the same student on labels alone
    s_lab = fresh_student()
    C.train(s_lab, data, epochs, seed=args.seed)
    results.append(("student, labels only (baseline)", s_lab))

    x1 = data.Xte[:1]
    rows = []
    for name, m in [("teacher (article model)", teacher), *results]:
        total, _ = C.weights(m)
        rows.append((name, f"{total:,}", C.kib(4 * total), C.pct(pfc.accuracy(m, data.Xte, data.yte)),
                     f"{C.p50_ms(lambda: m(x1)):.3f}"))
    C.table(("model", "params", "fp32 bytes", "accuracy", "p50 ms (numpy, batch 1)"), rows)
    t_params, _ = C.weights(teacher)
    s_params, _ = C.weights(s_kd)
    print(f"effect: the student has {t_params / s_params:.2f}x fewer parameters; distilled (KD) accuracy "
          f"{C.pct(pfc.accuracy(s_kd, data.Xte, data.yte))} vs labels-only "
          f"{C.pct(pfc.accuracy(s_lab, data.Xte, data.yte))} vs teacher "
          f"{C.pct(pfc.accuracy(teacher, data.Xte, data.yte))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
