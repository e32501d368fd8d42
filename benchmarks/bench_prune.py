"""Speed of global magnitude pruning: ``pfc.prune(model, 0.9, scope="global")`` on a 14.7M-parameter MLP.

Model: Chain(Dense(4096 => 2048), Dense(2048 => 2048), Dense(2048 => 1024), Dense(1024 => 10)) with random
weights (14,690,304 weights, 5,130 biases; training is irrelevant to the cost of pruning). Anchors measured
in the same run, on the same weights:

* ``np.copyto`` of every weight array into preallocated arrays — one memory pass, the floor of any pure
  (copying) pruning function. Target: ``pfc.prune`` <= 10x this.
* ``torch.nn.utils.prune.global_unstructured(..., L1Unstructured, amount=0.9)`` followed by
  ``prune.remove`` on every layer (the result is a plain pruned model, like ours). Target: >= 20x faster.

Also measured: the forward pass of the dense, the 90 %-pruned, and a structurally pruned copy (the honest
part: unstructured zeros change nothing on a CPU; removing units does).

Run: ``python benchmarks/bench_prune.py [--repeats 5] [--torch-repeats 2]``. Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import pyflux_compress as pfc
from pyflux_compress.compression import prune as prune_mod

DIMS = (4096, 2048, 2048, 1024, 10)


def build(seed: int = 0) -> pfc.Chain:
    rng = np.random.default_rng(seed)
    layers = []
    for i, (n_in, n_out) in enumerate(zip(DIMS[:-1], DIMS[1:])):
        w = (rng.standard_normal((n_out, n_in), dtype=np.float32) * np.float32(1 / np.sqrt(n_in)))
        act = pfc.relu if i < len(DIMS) - 2 else pfc.identity
        layers.append(pfc.Dense(w, rng.standard_normal(n_out).astype(np.float32) * 0.01, act))
    return pfc.Chain(*layers)


def timeit(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--torch-repeats", type=int, default=2)
    args = ap.parse_args()

    model = build()
    weights = [layer.weight for layer in model.layers]
    n = sum(w.size for w in weights)
    print(f"model: {model}  ({n:,} weights)")

    dst = [np.empty_like(w) for w in weights]
    copy_t = timeit(lambda: [np.copyto(d, w) for d, w in zip(dst, weights)], args.repeats)
    result = {}
    prune_t = timeit(lambda: result.__setitem__("m", pfc.prune(model, 0.9, scope="global")), args.repeats)
    pruned = result["m"]
    k = prune_mod.n_to_prune(0.9, n)
    zeros = sum(int(np.count_nonzero(layer.weight == 0)) for layer in pruned.layers)
    assert zeros == k, (zeros, k)

    # phases (for the record): argument validation, threshold selection, the rest (writing the pruned copy
    # and masks into fresh memory, records)
    flats = [w.reshape(-1) for w in weights]
    offsets = np.concatenate([[0], np.cumsum([f.size for f in flats])])
    phase = {
        "validation": min(timeit(lambda: prune_mod.validate_prune(model, 0.9, "global"), args.repeats)),
        "threshold selection": min(timeit(lambda: prune_mod._bracketed_select(flats, offsets, k), args.repeats)),
    }
    phase["writing the pruned copy and masks (remainder)"] = min(prune_t) - sum(phase.values())

    torch_t: list[float] = []
    agree = None
    try:
        import torch
        from torch.nn.utils import prune as tprune

        torch.set_num_threads(max(1, torch.get_num_threads()))
        for _ in range(args.torch_repeats):
            tm = torch.nn.Sequential(*[torch.nn.Linear(i, o) for i, o in zip(DIMS[:-1], DIMS[1:])])
            with torch.no_grad():
                for lin, w in zip(tm, weights):
                    lin.weight.copy_(torch.from_numpy(w))
            params = [(lin, "weight") for lin in tm]
            t0 = time.perf_counter()
            tprune.global_unstructured(params, pruning_method=tprune.L1Unstructured, amount=0.9)
            for lin, name in params:
                tprune.remove(lin, name)
            torch_t.append(time.perf_counter() - t0)
        ours = np.concatenate([layer.weight.ravel() != 0 for layer in pruned.layers])
        theirs = np.concatenate([lin.weight.detach().numpy().ravel() != 0 for lin in tm])
        agree = float(np.mean(ours == theirs))
        torch_threads = torch.get_num_threads()
    except ImportError:
        torch_threads = 0

    # what pruning buys on a CPU: forward latency, batch 64
    X = np.random.default_rng(1).standard_normal((64, DIMS[0])).astype(np.float32)
    structured = pfc.prune_structured(model, 0.5)
    variants = (("dense", model), ("90% unstructured (masked zeros)", pruned), ("structured 50% units", structured))
    fwd_all: dict[str, list[float]] = {name: [] for name, _ in variants}
    for _ in range(3 * args.repeats):          # interleaved, so load changes hit every variant alike
        for name, m in variants:
            fwd_all[name] += timeit(lambda m=m: m(X), 1)
    fwd = {name: min(ts) for name, ts in fwd_all.items()}

    best_copy, best_prune = min(copy_t), min(prune_t)
    rows = [
        ("np.copyto, all weights (anchor)", best_copy, statistics.median(copy_t)),
        ("pfc.prune(model, 0.9, scope=\"global\")", best_prune, statistics.median(prune_t)),
    ]
    if torch_t:
        rows.append(("torch global_unstructured + remove", min(torch_t), statistics.median(torch_t)))
    print("\n| operation | best (ms) | median (ms) |\n|---|---|---|")
    for name, best, med in rows:
        print(f"| {name} | {1e3 * best:.1f} | {1e3 * med:.1f} |")
    print(f"\npfc.prune / np.copyto = {best_prune / best_copy:.1f}x (target <= 10x; medians: "
          f"{statistics.median(prune_t) / statistics.median(copy_t):.1f}x)")
    if torch_t:
        print(f"torch / pfc.prune = {min(torch_t) / best_prune:.0f}x faster (target >= 20x; medians: "
              f"{statistics.median(torch_t) / statistics.median(prune_t):.0f}x); torch threads: {torch_threads}; "
              f"masks agree on {100 * agree:.5f}% of weights (ties may differ)")
    print("\nphases of pfc.prune (best, ms): " + ", ".join(f"{k} {1e3 * v:.1f}" for k, v in phase.items()))
    print("\nforward pass, batch 64 (best, ms): " + ", ".join(f"{k} {1e3 * v:.1f}" for k, v in fwd.items()))
    print(f"dense params: dense {pfc.count_params(model, nonzero=False)['total']:,}, "
          f"90% pruned {pfc.count_params(pruned, nonzero=False)['total']:,} "
          f"({pfc.count_params(pruned)['total']:,} nonzero), structured {pfc.count_params(structured, nonzero=False)['total']:,}")


if __name__ == "__main__":
    main()
