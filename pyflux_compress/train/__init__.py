"""Training engine: losses (Flux definitions), optimisers (Optimisers.jl rules), fit / predict / accuracy."""
from __future__ import annotations

from . import losses
from .fit import History, accuracy, fit, predict
from .optimisers import SGD, Adam

__all__ = ["losses", "fit", "predict", "accuracy", "History", "Adam", "SGD"]
