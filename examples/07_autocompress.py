"""Automatic compression: let an Optuna search pick each layer's sparsity, bits and rank (pfc.autocompress).

Not one of the article's snippets: the article picks sparsity and bit width by hand; this example asks a search
for the per-layer policy under an accuracy budget (docs/search.md).

    python examples/07_autocompress.py [--trials 20] [--max-drop 1.0] [--scheduler tcp://127.0.0.1:8786]

What it does: trains the article's MLP, runs ``pfc.autocompress`` (TPE on archive bytes, validation split carved
from the training data, the test set touched once at the end), prints the policy, the Pareto front and the
compression ratio, and writes ``best.pfcz``, ``front.png`` and ``search.json`` to ``--out``. With ``--scheduler``
the trials run on the workers of that Dask cluster; with ``--storage study.log`` an interrupted run resumes.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402
import pyflux_compress as pfc  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--trials", type=int, default=8 if C.FAST else 20)
    p.add_argument("--max-drop", type=float, default=1.0, help="validation accuracy budget, points")
    p.add_argument("--scheduler", default=None, help="Dask scheduler address (default: in-process)")
    p.add_argument("--storage", default=None, help="journal file or sqlite:/// URL to persist the study")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    out = args.out or tempfile.mkdtemp(prefix="pyflux-example-")
    os.makedirs(out, exist_ok=True)

    data = C.load_data(max_train=20000)
    model = C.trained_article_model(data, args.epochs, args.seed)
    result = pfc.autocompress(model, data.Xtr, data.ytr, max_drop=args.max_drop, objective="size",
                              trials=args.trials, finetune_epochs=1, seed=args.seed, executor=args.scheduler,
                              storage=args.storage, test=(data.Xte, data.yte), progress=False)
    print(result)
    print("Pareto front (validation):")
    print(result.front_table())
    result.plot(os.path.join(out, "front.png"))
    result.to_json(os.path.join(out, "search.json"))
    if result.best_model is None:
        print(f"no trial met the budget of {args.max_drop} points: raise --trials or --max-drop")
        return 1
    n = pfc.save_compressed(os.path.join(out, "best.pfcz"), result.best_model)
    dense = pfc.size_report(model)["fp32_dense"]
    print(f"effect: {dense:,d} B fp32 -> {n:,d} B archive ({dense / n:.1f}x), test accuracy "
          f"{C.pct(result.test['baseline'])} -> {C.pct(result.test['best'])}; outputs in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
