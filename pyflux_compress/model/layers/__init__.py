"""Flux layers on NumPy, one file per layer; importing this package registers them all.

Every layer implements the contract of :class:`~.base.Layer` (docs/ARCHITECTURE.md): forward/backward on
batch-first data, ``params()`` in Flux's field order with Flux's shapes (Dense ``(out, in)``, Conv ``(kw, kh,
cin, cout)``), ``repr`` in Flux syntax, and the declarations the rest of the package reads (registry).
"""
from __future__ import annotations

# registration order is the order of "supported ..." listings in error messages
from .dense import Dense  # isort: skip
from .conv import Conv, CrossCor  # isort: skip
from .pool import GlobalMeanPool, MaxPool, MeanPool  # isort: skip
from .flatten import Flatten, flatten  # isort: skip
from .batchnorm import BatchNorm  # isort: skip
from .dropout import Dropout  # isort: skip
from ..syntax import SamePad  # isort: skip
from .base import Grads, Layer  # isort: skip

__all__ = ["Layer", "Dense", "Conv", "CrossCor", "MaxPool", "MeanPool", "GlobalMeanPool", "Flatten", "flatten",
           "BatchNorm", "Dropout", "SamePad", "Grads"]
