"""An LSTM classifier on sequential Fashion-MNIST (28 rows of 28 features), compressed end to end.

``Chain(LSTM(28 => 64), flatten, Dense(1792 => 10))`` (Flux >= 0.15 syntax): train, prune 50% of the hidden
units across all four gates + fine-tune, ONNX ``LSTM`` export, int8 with ``pfc.quantize`` (unrolled integer
graph) and with onnxruntime's dynamic quantizer (``DynamicQuantizeLSTM``, the faster one for LSTM), latencies,
JLD2 round trip. The steps live in examples/_sequence.py;
measured figures are in the module docstring there and in the README. ``PYFLUX_EXAMPLE_FAST=1`` (the test)
trains on 2,000 images for one epoch (accuracy then is low).
"""
from __future__ import annotations

import _sequence


def main() -> int:
    _sequence.run("LSTM", _sequence.parse_args(__doc__.splitlines()[0]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
