"""Accuracy of the compression techniques on Fashion-MNIST (the issue-4 acceptance numbers, full size).

Trains the article MLP ``Chain(Dense(784 => 128, relu), Dense(128 => 64, relu), Dense(64 => 10))`` (3 epochs,
Adam 1e-3, batch 128, seed 0 — the test fixture's recipe), then measures on the 10,000 test images:

* global 90 % magnitude pruning, before and after fine-tuning (masks kept);
* ``PolynomialDecay`` gradual pruning to 90 % during fine-tuning; ``prune_iteratively`` 50/75/90 %;
* structured pruning of 50 % of the hidden neurons (dense parameter count and test accuracy);
* 2:4 sparsity; low-rank at energy 0.9 and 0.95;
* distillation into ``Chain(Dense(784 => 32, relu), Dense(32 => 10))`` vs the same student on labels alone;
* a small CNN with structured filter pruning through pooling and flatten;
* ``ptq``: post-training quantization only (no QAT) of a LeNet-style CNN (trained ``--lenet-epochs`` on 50,000
  training images; 512 of the other 10,000, a random validation split, calibrate): int8/int4/int3/int2
  per-channel weights with 8-bit static activations, each with its activation calibration method, weight
  clipping, rounding (AdaRound iterations) and bias correction printed (targets: int4 drop <= 0.5 points,
  int3 <= 2, int2 accuracy >= 0.75);
* ``mixed``: ``sensitivity`` on the validation split (10,000 training images, never test) and
  ``suggest_bits(max_drop=0.005)`` (searched on one half of it, confirmed on the other): the policy's drop on
  the validation split, on its confirmation half (+ margin) and on the held-out test set (target <= 0.5
  points), and its size.

``ptq`` and ``mixed`` run once per ``--seeds`` entry (default 0,1,2): the seed draws the validation split, the
initial weights and the training order.

Run: ``python benchmarks/compression_accuracy.py [--finetune-epochs 1] [--out benchmarks/results/prune_accuracy.md]``;
the PTQ figures: ``python benchmarks/compression_accuracy.py --sections ptq mixed --seeds 0,1,2``.
Prints a Markdown table (and writes it with ``--out``).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import pyflux_compress as pfc

ARTICLE = "Chain(Dense(784 => 128, relu), Dense(128 => 64, relu), Dense(64 => 10))"
STUDENT = "Chain(Dense(784 => 32, relu), Dense(32 => 10))"
CNN = ("Chain(Conv((3, 3), 1 => 8, relu), MaxPool((2, 2)), Conv((3, 3), 8 => 16, relu), MaxPool((2, 2)), "
       "flatten, Dense(400 => 10))")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--finetune-epochs", type=int, default=1)
    ap.add_argument("--distill-epochs", type=int, default=3)
    ap.add_argument("--out", default=None)
    ap.add_argument("--lenet-epochs", type=int, default=3)
    ap.add_argument("--seeds", default="0,1,2", help="ptq/mixed: one run per seed (split, init, training order)")
    ap.add_argument("--sections", nargs="+", default=["prune,structured,sparsify,lowrank,distill,cnn,ptq,mixed"],
                    help="subset of prune,structured,sparsify,lowrank,distill,cnn,ptq,mixed (commas or spaces)")
    args = ap.parse_args()
    sections = {s for arg in args.sections for s in arg.split(",") if s}

    Xtr, ytr, Xte, yte = pfc.datasets.load("fashion-mnist")
    Xtr_img, Xte_img = Xtr, Xte
    Xtr, Xte = Xtr.reshape(len(Xtr), -1), Xte.reshape(len(Xte), -1)
    fit_kw = dict(batchsize=128, progress=False, seed=0)
    rows: list[tuple[str, str, str, str, str]] = []

    def acc(m, X=Xte):
        return 100 * pfc.accuracy(m, X, yte)

    def dense(m):
        return pfc.count_params(m, nonzero=False)["total"]

    def nnz(m):
        return pfc.count_params(m, nonzero=True)["total"]

    t0 = time.perf_counter()
    base = pfc.parse(ARTICLE, seed=0)
    pfc.fit(base, Xtr, ytr, epochs=3, opt=pfc.Adam(1e-3), **fit_kw)
    a0 = acc(base)
    rows.append(("article MLP (3 epochs)", f"{a0:.2f}", "-", f"{dense(base)}", f"{nnz(base)}"))
    ft = args.finetune_epochs

    def row(name, m, note=""):
        a = acc(m)
        rows.append((name, f"{a:.2f}", f"{a - a0:+.2f}", f"{dense(m)}", f"{nnz(m)}{note}"))
        return a

    if "prune" in sections:
        prune_section(base, Xtr, ytr, ft, fit_kw, row)
    if "structured" in sections:
        s = pfc.prune_structured(base, 0.5)
        row(f"structured 50% hidden neurons {s}", s)
        pfc.fit(s, Xtr, ytr, epochs=ft, opt=pfc.Adam(1e-3), **fit_kw)
        row(f"structured 50% + {ft} epoch fine-tune", s)
    if "sparsify" in sections:
        nm = pfc.sparsify(base, pattern="2:4")
        row("sparsify 2:4, no fine-tune", nm)
        pfc.fit(nm, Xtr, ytr, epochs=ft, opt=pfc.Adam(1e-3), **fit_kw)
        row(f"sparsify 2:4 + {ft} epoch fine-tune", nm)
    if "lowrank" in sections:
        for e in (0.9, 0.95):
            lr = pfc.lowrank(base, energy=e)
            row(f"lowrank energy {e} ranks {lr.records[-1]['per_layer']}", lr)
        lr = pfc.lowrank(base, energy=0.9)
        pfc.fit(lr, Xtr, ytr, epochs=ft, opt=pfc.Adam(1e-3), **fit_kw)
        row(f"lowrank energy 0.9 + {ft} epoch fine-tune", lr)
    if "distill" in sections:
        distill_section(base, Xtr, ytr, args.distill_epochs, fit_kw, row)
    if "cnn" in sections:
        cnn_section(Xtr_img, ytr, Xte_img, yte, fit_kw, rows, acc, dense, nnz)
    if "ptq" in sections or "mixed" in sections:
        ptq_section(Xtr_img, ytr, Xte_img, yte, args.lenet_epochs, fit_kw, rows, sections,
                    seeds=[int(v) for v in args.seeds.split(",")])

    lines = ["| model | test acc % | change (points) | dense params | nonzero params |", "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    text = "\n".join(lines) + f"\n\n(total run time {time.perf_counter() - t0:.0f} s)\n"
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text)


def prune_section(base, Xtr, ytr, ft, fit_kw, row):
    # magnitude, global 90 %
    g = pfc.prune(base, 0.9, scope="global")
    row("prune global 90%, no fine-tune", g)
    pfc.fit(g, Xtr, ytr, epochs=ft, opt=pfc.Adam(1e-3), **fit_kw)
    row(f"prune global 90% + {ft} epoch fine-tune", g)
    print("per-layer sparsity (global 90%):", pfc.sparsity(g)["per_layer"])

    # gradual (Zhu & Gupta) during fine-tuning
    steps = int(np.ceil(len(Xtr) / 128)) * ft
    gd = base.copy()
    sched = pfc.PolynomialDecay(0.0, 0.9, begin=0, end=int(0.8 * steps), frequency=max(1, steps // 40),
                                scope="global")
    pfc.fit(gd, Xtr, ytr, epochs=ft, opt=pfc.Adam(1e-3), pruning=sched, **fit_kw)
    row(f"PolynomialDecay 0->90% over {ft} epoch", gd)

    it = pfc.prune_iteratively(base, Xtr, ytr, [0.5, 0.75, 0.9], epochs=1, scope="global",
                               opt=pfc.Adam(1e-3), **fit_kw)
    row("prune_iteratively 50/75/90% (1 epoch each)", it)



def distill_section(base, Xtr, ytr, de, fit_kw, row):
    """Student vs labels-only, same init, epochs and seed: full data, then a 5,000-image labelled subset."""
    for n, epochs in ((len(Xtr), de), (5000, 8)):
        X, y = Xtr[:n], ytr[:n]
        student = pfc.parse(STUDENT, seed=1)
        ce = student.copy()
        pfc.fit(ce, X, y, epochs=epochs, opt=pfc.Adam(1e-3), **fit_kw)
        row(f"student 784-32-10, {n} images x {epochs} epochs, labels only", ce)
        for T, a, loss in ((4.0, 0.9, "kl"), (2.0, 0.5, "kl"), (1.0, 0.5, "mse")):
            kd = pfc.distill(base, student, X, y, temperature=T, alpha=a, loss=loss, epochs=epochs,
                             batchsize=128, opt=pfc.Adam(1e-3), seed=0, progress=False)
            row(f"student 784-32-10, {n} images x {epochs} epochs, distilled {loss} T={T} alpha={a}", kd)


def cnn_section(Xtr_img, ytr, Xte_img, yte, fit_kw, rows, acc, dense, nnz):
    cnn = pfc.parse(CNN, seed=0)
    pfc.fit(cnn, Xtr_img[:20000], ytr[:20000], epochs=1, opt=pfc.Adam(1e-3), **fit_kw)
    c0 = acc(cnn, Xte_img)
    rows.append(("CNN (1 epoch on 20k)", f"{c0:.2f}", "-", f"{dense(cnn)}", f"{nnz(cnn)}"))
    cs = pfc.prune_structured(cnn, 0.5)
    a = acc(cs, Xte_img)
    rows.append((f"CNN structured 50% filters {cs}", f"{a:.2f}", f"{a - c0:+.2f}", f"{dense(cs)}", f"{nnz(cs)}"))
    pfc.fit(cs, Xtr_img[:20000], ytr[:20000], epochs=1, opt=pfc.Adam(1e-3), **fit_kw)
    a = acc(cs, Xte_img)
    rows.append(("CNN structured 50% + 1 epoch on 20k", f"{a:.2f}", f"{a - c0:+.2f}", f"{dense(cs)}", f"{nnz(cs)}"))


LENET = ("Chain(Conv((5, 5), 1 => 6, relu), MaxPool((2, 2)), Conv((5, 5), 6 => 16, relu), MaxPool((2, 2)), "
         "flatten, Dense(256 => 120, relu), Dense(120 => 84, relu), Dense(84 => 10))")
# (bits, quantize options): the best post-training recipe per bit width, plus plain min-max for reference
BEST = dict(method="mse", weight_clip="mse", rounding="adaround", adaround_iters=1500, bias_correction=True)
PTQ = [(8, dict(method="minmax")), (4, dict(method="minmax")), (4, BEST), (3, dict(method="minmax")), (3, BEST),
       (2, dict(method="minmax")), (2, BEST)]
CALIBRATION = 512  # calibration images, from the validation split
TARGETS = {4: ("drop", 0.5), 3: ("drop", 2.0), 2: ("accuracy", 75.0)}


def ptq_section(Xtr, ytr, Xte, yte, epochs, fit_kw, rows, sections, seeds=(0,)):
    """Post-training quantization of a LeNet-style CNN; budgeted mixed precision on a validation split.

    One run per seed: the seed draws the random 50,000 / 10,000 training / validation split, the initial
    weights and the training order; the 10,000 test images are the held-out split in every run.
    """
    verdicts: list[str] = []
    for seed in seeds:
        verdicts += ptq_seed(Xtr, ytr, Xte, yte, epochs, {**fit_kw, "seed": seed}, rows, sections, seed)
    missed = [v for v in verdicts if "MISSED" in v]
    rows.append((f"PTQ/mixed over seeds {list(seeds)}: {len(verdicts) - len(missed)} of {len(verdicts)} targets "
                 f"met" + (f"; missed: {'; '.join(missed)}" if missed else ""), "-", "-", "-", "-"))
    print(rows[-1], flush=True)


def ptq_seed(Xtr, ytr, Xte, yte, epochs, fit_kw, rows, sections, seed):
    """One seed of :func:`ptq_section`; returns one verdict string per target."""
    lenet = pfc.parse(LENET, seed=seed)
    order = np.random.default_rng(seed).permutation(len(Xtr))  # a random validation split, not the file's tail
    fit_idx, val_idx = order[:50000], order[50000:]
    pfc.fit(lenet, Xtr[fit_idx], ytr[fit_idx], epochs=epochs, opt=pfc.Adam(1e-3), **fit_kw)
    Xval, yval = Xtr[val_idx], ytr[val_idx]  # never trained on; calibration and selection data
    cal = Xval[:CALIBRATION]
    a0 = 100 * pfc.accuracy(lenet, Xte, yte)
    n = pfc.count_params(lenet)["total"]
    rows.append((f"seed {seed}: LeNet (fp32, {epochs} epochs on 50k)", f"{a0:.2f}", "-", f"{n}", f"{n}"))
    print(rows[-1], flush=True)
    verdicts: list[str] = []
    if "ptq" in sections:
        for bits, kw in PTQ:
            t = time.perf_counter()
            q = pfc.quantize(lenet, bits, scheme="symmetric", granularity="per_channel", calibration=cal, **kw)
            a = 100 * pfc.accuracy(q, Xte, yte)
            how = (f"activations 8-bit {kw['method']} on {len(cal)} validation images, weights clip "
                   f"{kw.get('weight_clip', 'minmax')}, rounding {kw.get('rounding', 'nearest')}"
                   + (f" ({kw['adaround_iters']} iterations)" if "adaround_iters" in kw else "")
                   + f", bias correction {'on' if kw.get('bias_correction') else 'off'}")
            kind, limit = TARGETS.get(bits, (None, None)) if kw.get("rounding") == "adaround" else (None, None)
            verdict = ""
            if kind is not None:
                met = a0 - a <= limit if kind == "drop" else a >= limit
                verdict = " [target met]" if met else " [TARGET MISSED]"
                verdicts.append(f"seed {seed} int{bits}{verdict}")
            rows.append((f"seed {seed}: LeNet PTQ int{bits} per-channel: {how} ({time.perf_counter() - t:.0f} s)"
                         f"{verdict}", f"{a:.2f}", f"{a - a0:+.2f}", f"{n}", f"{n}"))
            print(rows[-1], flush=True)
    if "mixed" in sections:
        opts = dict(scheme="symmetric", granularity="per_channel", calibration=cal, method="mse", weight_clip="mse",
                    bias_correction=True)
        table = pfc.sensitivity(lenet, Xval, yval, bits=(8, 4, 3, 2), sparsities=(), quantize_options=opts)
        print(table)
        policy = table.suggest_bits(max_drop=0.005)
        print(policy, *policy.steps, sep="\n  ")
        q = pfc.quantize(lenet, bits=dict(policy), **opts)
        a = 100 * pfc.accuracy(q, Xte, yte)
        met = a0 - a <= 0.5
        verdicts.append(f"seed {seed} mixed [{'target met' if met else 'TARGET MISSED'}]")
        rows.append((f"seed {seed}: LeNet suggest_bits(max_drop=0.005) on validation {dict(policy)}: "
                     f"{policy.size_bytes} bytes ({policy.size_bytes / policy.float_bytes:.3f} of fp32), validation "
                     f"drop {100 * policy.drop:.2f} points (confirmation half {100 * policy.confirm_drop:.2f} + margin "
                     f"{100 * policy.margin:.2f}); held-out test drop "
                     f"{a0 - a:.2f} points [{'target met' if met else 'TARGET MISSED'}]", f"{a:.2f}",
                     f"{a - a0:+.2f}", f"{n}", f"{n}"))
        print(rows[-1], flush=True)
    return verdicts


if __name__ == "__main__":
    main()
