"""Temporary shim: the base names the registry's ``model/layers/base.py`` will provide."""
from __future__ import annotations

from ..layers import Grads, Layer  # noqa: F401
from ..layers import _as_data as as_data  # noqa: F401
from ..layers import _bias_array as bias_array  # noqa: F401
from ..layers import _float_dtype as float_dtype  # noqa: F401
from ..layers import _init_fn as init_fn  # noqa: F401
from ..layers import _tuple_str as tuple_str  # noqa: F401
