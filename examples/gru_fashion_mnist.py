"""A GRU classifier on sequential Fashion-MNIST (28 rows of 28 features), compressed end to end.

``Chain(GRU(28 => 64), flatten, Dense(1792 => 10))`` (Flux >= 0.15 syntax): train, prune 50% of the hidden
units across all three gates + fine-tune, ONNX ``GRU`` export (``linear_before_reset=1``), int8 with
``pfc.quantize`` (every step's products on integer kernels: onnxruntime has no integer GRU op) against
onnxruntime's dynamic quantizer (which leaves the GRU op in float), latencies, JLD2 round trip. The steps live in
examples/_sequence.py;
measured figures are in the module docstring there and in the README. ``PYFLUX_EXAMPLE_FAST=1`` (the test)
trains on 2,000 images for one epoch (accuracy then is low).
"""
from __future__ import annotations

import _sequence


def main() -> int:
    _sequence.run("GRU", _sequence.parse_args(__doc__.splitlines()[0]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
