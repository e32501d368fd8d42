"""The training step as a backend kernel: forward, loss, backward and optimiser update of one batch.

``fit`` stays Python on every backend (validation, batching, the pruning hook, masks, History); the array work
of one step is the kernel ``train_step``. Its numpy implementation is the model's own ``forward``/``backward``
(on shards of the batch over threads where the model allows it: train/parallel.py) and the optimiser's
``step``. The julia twin (``backends/julia.py``, ``kernel_train_step`` in julia/src/kernels.jl) reads only the
plain values a :class:`Step` derives on demand: the model's Flux syntax, its ``Flux.state`` arrays by Flux
path, the loss name and the optimiser rule.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from ..backends import kernel
from ..model.walk import modules
from . import losses
from .optimisers import SGD, Adam
from .parallel import forward_backward

__all__ = ["Step", "train_step"]


@dataclass
class Step:
    """What one step trains: ``model`` with ``loss`` (a loss object) and ``opt``; ``backward_kw`` is passed to
    ``model.backward`` (``need_input_grad=False`` where accepted). Rebuilt whenever arrays may be replaced."""

    model: Any
    loss: Any
    opt: Any
    backward_kw: dict = field(default_factory=dict)

    @cached_property
    def arch(self) -> str:
        """The model in one-line Flux syntax (``model_from_arch`` in julia/src/io.jl reads it)."""
        return str(self.model)

    @cached_property
    def arrays(self) -> dict[str, np.ndarray]:
        """Every array field of ``Flux.state(model)`` (parameters and running statistics) by its Julia path
        relative to the model, e.g. ``"layers[2].σ²"``, to the live array of the Python layer (same shape)."""
        out: dict[str, np.ndarray] = {}
        for path, layer in modules(self.model):
            for flux_field, attr in type(layer).flux_fields.items():
                value = getattr(layer, attr, None)
                if isinstance(value, np.ndarray):
                    out[flux_field if path == "model" else f"{path}.{flux_field}"] = value
        return out

    @property
    def loss_name(self) -> str | None:
        """The Flux.Losses name of ``loss`` if it is one of ``pfc.losses``' own objects, else None."""
        name = getattr(self.loss, "name", None)
        return name if name in losses.NAMES and losses.get(name) is self.loss else None

    @property
    def rule(self) -> tuple | None:
        """``(kind, lr, beta1, beta2, eps, momentum, nesterov, weight_decay)`` for ``pfc.Adam``/``pfc.SGD``
        (``optimiser_rule`` in julia/src/distill.jl builds the Optimisers.jl twin); None for other optimisers."""
        o = self.opt
        if isinstance(o, Adam):
            return ("adam", o.lr, o.beta[0], o.beta[1], o.eps, 0.0, False, o.weight_decay)
        if isinstance(o, SGD):
            return ("sgd", o.lr, 0.9, 0.999, 1e-8, o.momentum, o.nesterov, o.weight_decay)
        return None


@kernel("train_step")
def train_step(step: Step, xb: np.ndarray, yb: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """One optimiser step on the batch ``xb`` (batch-first) with targets ``yb`` (int labels or arrays shaped
    like the output); updates the model's arrays in place. ``rng`` drives stochastic layers (Dropout).
    Returns ``(model outputs (B, ...), mean loss)``. Masks are re-applied by the caller."""
    out, value, grads = forward_backward(step.model, xb, yb, step.loss, rng, step.backward_kw)  # sharded
    params = step.model.params()
    keys = [k for k in params if grads.get(k) is not None]  # a layer may leave a parameter frozen
    step.opt.step([params[k] for k in keys], [grads[k] for k in keys])
    return out, value
