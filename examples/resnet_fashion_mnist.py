"""A small ResNet (SkipConnection + BatchNorm + GlobalMeanPool) on Fashion-MNIST, compressed end to end.

The model, in Flux syntax (the same text builds it in Julia with ``using Flux``)::

    Chain(Conv((3, 3), 1 => 16, relu; pad=1, stride=2),                         # 28x28 -> 14x14
          SkipConnection(Chain(Conv((3, 3), 16 => 16; pad=1), BatchNorm(16, relu),
                               Conv((3, 3), 16 => 16; pad=1), BatchNorm(16)), +), relu,
          MaxPool((2, 2)), Conv((3, 3), 16 => 32, relu; pad=1),               # 14x14 -> 7x7
          SkipConnection(Chain(Conv((3, 3), 32 => 32; pad=1), BatchNorm(32, relu),
                               Conv((3, 3), 32 => 32; pad=1), BatchNorm(32)), +), relu,
          GlobalMeanPool(), flatten, Dense(32 => 10))

Steps, each printing test accuracy: train (Adam); int8 quantization (per-channel weights, calibrated
activations); 50% structured pruning + fine-tuning — channels added by ``+`` are one channel on both sides of
every SkipConnection, so the residual stream (stem, each block's last conv and BatchNorm, every consumer of the
sums) shrinks as one group and the blocks' inner channels shrink on their own (compression/channel_groups.py);
80% unstructured magnitude pruning + fine-tuning; ONNX export (onnxruntime vs NumPy max |diff|); JLD2 save/load
(bit-exact weights).

Measured (4 epochs on all 60,000 images, 2 shared cores at load average ~10, 799 s of training; fine-tuning is 1
epoch on 20,000 images at lr 5e-4): test accuracy 88.57%; int8 88.73%; 50% structured (28,458 -> 7,322
parameters: stream 16/32 -> 8/16 channels) 10.00% before, 79.21% after fine-tuning — one short epoch does not
bring back a net that lost 74% of its parameters; ``--finetune 60000`` (1 epoch on all 60,000 images, same rate) gives 84.00% (and 82.69% for 80% unstructured);
80% unstructured 10.47% before, 74.20% after fine-tuning (every layer, the 144-weight stem included, loses 80%;
one global threshold, ``pfc.prune(model, 0.8, scope="global")``, did better in an earlier run: 86.16%); ONNX max
relative |diff| 7.70e-07; JLD2 weights bit-exact. (Before the stream was coupled, 50% structured kept it whole:
28,458 -> 16,866 parameters, 88.03% after the default fine-tuning.) ``--train`` / ``--epochs`` shrink the run;
``PYFLUX_EXAMPLE_FAST=1`` (the test) trains on 2,000 images only (accuracy then is low). The steps live in
examples/_zoo.py.
"""
from __future__ import annotations

import _zoo

ARCH = ("Chain(Conv((3, 3), 1 => 16, relu; pad=1, stride=2), "
        "SkipConnection(Chain(Conv((3, 3), 16 => 16; pad=1), BatchNorm(16, relu), Conv((3, 3), 16 => 16; pad=1), "
        "BatchNorm(16)), +), relu, MaxPool((2, 2)), Conv((3, 3), 16 => 32, relu; pad=1), "
        "SkipConnection(Chain(Conv((3, 3), 32 => 32; pad=1), BatchNorm(32, relu), Conv((3, 3), 32 => 32; pad=1), "
        "BatchNorm(32)), +), relu, GlobalMeanPool(), flatten, Dense(32 => 10))")


def main() -> int:
    _zoo.run(ARCH, _zoo.parse_args(__doc__.splitlines()[0], epochs=4, train=60000))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
