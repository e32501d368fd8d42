"""int8 recurrent models in onnxruntime: the four ONNX forms of a GRU / LSTM classifier on sequential
Fashion-MNIST, accuracy and latency at batch 256 and 1, on 1 and 2 intra-op threads.

Forms (examples/_sequence.py ``int8_comparison``): fp32 ONNX op, fp32 unrolled (the fair float baseline of the
int8 graph), int8 from ``pfc.quantize(..., activations="dynamic")`` (DynamicQuantizeLinear + MatMulInteger for
the input projection, every recurrent step and the Dense), and onnxruntime's own ``quantize_dynamic`` of the
fp32 op file (the anchor: DynamicQuantizeLSTM for LSTM; GRU stays float).

    python benchmarks/bench_recurrent_int8.py --kind GRU LSTM --train 60000 --epochs 6

Latencies do not depend on the weights; ``--train 0`` skips training (accuracy is then chance level) for a quick
timing re-run on an idle machine. The examples (examples/gru_fashion_mnist.py, lstm_fashion_mnist.py) run the
same comparison after their full training.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

import _sequence  # noqa: E402

import pyflux_compress as pfc  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kind", nargs="+", choices=("GRU", "LSTM"), default=["GRU", "LSTM"])
    ap.add_argument("--train", type=int, default=0, help="training images (0: untrained, timing only)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--hidden", type=int, default=64)
    args = ap.parse_args()
    Xtr, ytr, Xte, yte = _sequence.load_sequences(max(args.train, 1))
    out = Path(tempfile.mkdtemp(prefix="bench-recurrent-"))
    for kind in args.kind:
        model = pfc.parse(f"Chain({kind}(28 => {args.hidden}), flatten, Dense({28 * args.hidden} => 10))", seed=0)
        if args.train:
            pfc.fit(model, Xtr, ytr, epochs=args.epochs, batchsize=64, opt=pfc.Adam(2e-3), progress=False, seed=0)
        fp32 = Path(pfc.export_onnx(model, out / f"{kind.lower()}.onnx", input_shape=(28, 28)))
        print(f"{model} ({'untrained' if not args.train else f'{args.epochs} epoch(s) on {args.train} images'}), "
              f"load average {os.getloadavg()[0]:.2f}")
        _sequence.int8_comparison(model, kind, out, fp32, Xte, yte)


if __name__ == "__main__":
    main()
