"""A fake of juliacall/PythonCall's value conversions, with FluxCompress's kernels behind it.

The julia backend's bridge (``pyflux_compress/backends/julia.py``) is tested against this fake instead of a
Julia runtime. The conversions follow PythonCall 0.9's documented rules (JuliaPy/PythonCall.jl):

* Python -> Julia, arguments of a Julia function called from Python (``docs/src/conversion-to-julia.md``,
  converted with ``T=Any``): numpy arrays (buffer/array interface) -> ``PyArray`` wrapping the same memory
  with NumPy's strides (``src/Wrap/PyArray.jl``: strides are read from ``__array_interface__``); ``tuple`` ->
  ``Tuple`` (elements converted the same way); ``list`` -> ``PyList`` (elements stay Python objects: a list of
  numpy arrays is NOT a vector of arrays); ``None`` -> ``nothing``; ``bool``/``int``/``float``/``str`` ->
  ``Bool``/``Int``/``Float64``/``String``; numpy scalars -> the matching Julia number.
* Julia -> Python, return values (``docs/src/conversion-to-python.md``): ``Tuple`` and ``Pair`` -> ``tuple``
  (``Py(x::Pair) = pytuple_fromiter(x)``); ``AbstractArray`` -> ``juliacall.ArrayValue``, which numpy reads
  through ``__array_interface__`` with Julia's column-major strides (``src/JlWrap/array.jl``,
  ``pyjlarray_array_interface``; a ``BitArray`` has no interface and is copied through ``__array__``); a
  ``NamedTuple`` or struct -> ``AnyValue``: attribute access to its fields, no indexing, no ``.first``; Julia
  integers/floats -> ``int``/``float``; ``nothing`` -> ``None``.

The kernels are FluxCompress's ``kernel_*`` functions (``julia/src/kernels.jl``), computed here with the numpy
kernels and returned in Julia's conventions (1-based indices, column-major arrays, Bool arrays, NamedTuples).
Any other name — e.g. a layer constructor — is an AttributeError: the bridge may only call kernels.
"""
from __future__ import annotations

from typing import Any

import numpy as np


# ------------------------------------------------------------------------------------------ Julia-side values
class PyArray:
    """A numpy array seen from Julia: same memory, NumPy's strides (not necessarily column-major)."""

    def __init__(self, arr: np.ndarray) -> None:
        self.py = arr

    def dense(self) -> np.ndarray:
        """``Array(A)``: a dense column-major copy (what a kernel needs before BLAS/LAPACK)."""
        return np.asfortranarray(self.py)


class JlArray:
    """A Julia ``Array`` (column-major); ``bits=True`` models a ``BitArray`` (no array interface)."""

    def __init__(self, arr: Any, bits: bool = False) -> None:
        self.data = np.asfortranarray(arr)
        self.bits = bits


class NamedTuple:
    def __init__(self, **fields: Any) -> None:
        self.fields = fields


class Pair:
    def __init__(self, first: Any, second: Any) -> None:
        self.first, self.second = first, second


# ------------------------------------------------------------------------------------------ Python-side wrappers
class ArrayValue:
    """juliacall.ArrayValue: numpy reads it through __array_interface__ (a view of Julia's memory)."""

    def __init__(self, arr: JlArray) -> None:
        self._jl = arr
        if not arr.bits:
            self.__array_interface__ = arr.data.__array_interface__

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:   # BitArray: collected, copied
        return np.array(self._jl.data, dtype=dtype)

    @property
    def shape(self) -> tuple:
        return self._jl.data.shape


class AnyValue:
    """juliacall.AnyValue of a NamedTuple/struct: attribute access only."""

    def __init__(self, nt: NamedTuple) -> None:
        object.__setattr__(self, "_fields", nt.fields)
        object.__setattr__(self, "_jl", nt)      # passed back to Julia, it is the same Julia value again

    def __getattr__(self, name: str) -> Any:
        fields = object.__getattribute__(self, "_fields")
        if name not in fields:
            raise AttributeError(f"Julia NamedTuple has no field {name!r}")
        return to_python(fields[name])


class PyList:
    """A Python list seen from Julia: elements are Python objects, not converted arrays."""

    def __init__(self, items: list) -> None:
        self.items = items


def to_julia(x: Any) -> Any:
    if isinstance(x, AnyValue):
        return object.__getattribute__(x, "_jl")
    if isinstance(x, np.ndarray):
        return PyArray(x)
    if isinstance(x, tuple):
        return tuple(to_julia(v) for v in x)
    if isinstance(x, list):
        return PyList(x)
    if isinstance(x, np.generic):
        return x.item()
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    raise TypeError(f"fake PythonCall: no rule for {type(x).__name__}")


def to_python(x: Any) -> Any:
    if isinstance(x, (tuple, Pair)):
        items = (x.first, x.second) if isinstance(x, Pair) else x
        return tuple(to_python(v) for v in items)
    if isinstance(x, JlArray):
        return ArrayValue(x)
    if isinstance(x, NamedTuple):
        return AnyValue(x)
    if isinstance(x, np.generic):
        return x.item()
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    raise TypeError(f"fake PythonCall: no rule for Julia value {type(x).__name__}")


# ------------------------------------------------------------------------------------------ FluxCompress kernels
def _arr(x: Any) -> np.ndarray:
    if not isinstance(x, PyArray):
        raise TypeError(f"MethodError: expected an array (PyArray), got {type(x).__name__}")
    return x.py


def _numpy(name: str):
    from pyflux_compress.backends import kernels

    return kernels()[name].__numpy_kernel__


class FakeFluxCompress:
    """FluxCompress's kernel entry points with Julia's argument and return conventions."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        impl = getattr(type(self), "_" + name, None)
        if impl is None or not name.startswith("kernel_"):
            raise AttributeError(f"FluxCompress has no kernel {name!r} (the bridge may only call kernels)")

        def call(*args: Any) -> Any:
            self.calls.append(name)
            return to_python(impl(self, *[to_julia(a) for a in args]))

        return call

    def _kernel_magnitude_masks(self, arrays: Any, k: int) -> tuple:
        if not isinstance(arrays, tuple):
            raise TypeError("MethodError: kernel_magnitude_masks(::PyList, ...) — send a tuple of arrays")
        src = [_arr(a) for a in arrays]
        masks = _numpy("magnitude_prune")([a.copy() for a in src], k)
        return tuple(JlArray(m) for m in masks)       # Array{Bool}: has an array interface

    def _kernel_nm_mask(self, w: Any, n: int, m: int) -> JlArray:
        return JlArray(_numpy("nm_mask")(_arr(w), n, m))

    def _kernel_select_units(self, w: Any, axis: int, n_remove: int, criterion: str) -> JlArray:
        return JlArray(_numpy("select_units")(_arr(w), axis - 1, n_remove, criterion) + 1)     # 1-based

    def _kernel_quantize_array(self, w: Any, bits: int, scheme: str, granularity: str, mask: Any) -> NamedTuple:
        q, s, zp = _numpy("quantize_weight")(_arr(w), bits, scheme, granularity,
                                             None if mask is None else _arr(mask))
        return NamedTuple(q=JlArray(q), scale=JlArray(s), zero_point=JlArray(zp))

    def _kernel_dequantize_array(self, q: Any, scale: Any, zp: Any) -> JlArray:
        return JlArray(_numpy("dequantize_weight")(_arr(q), _arr(scale), _arr(zp)))

    def _kernel_kmeans_1d(self, values: Any, k: int, max_iter: int) -> tuple:
        c, labels, it = _numpy("kmeans_1d")(_arr(values), k, max_iter)
        return (JlArray(c), JlArray(labels + 1), it)

    def _kernel_svd(self, w: Any) -> tuple:
        u, s, vt = _numpy("svd")(_arr(w).copy(order="F"))
        return (JlArray(u), JlArray(s), JlArray(vt))

    def _kernel_singular_values(self, w: Any) -> JlArray:
        return JlArray(_numpy("singular_values")(_arr(w)))

    def _kernel_distill_loss_grad(self, zs: Any, pt: Any, y: Any, T: float, alpha: float, kind: str) -> tuple:
        z, p = _arr(zs), _arr(pt)                       # Julia's (K, B): the transposes of Python's (B, K)
        labels = None if y is None else _arr(y) - 1
        value, grad = _numpy("distill_loss_grad")(np.ascontiguousarray(z.T), np.ascontiguousarray(p.T), labels,
                                                  T, alpha, kind)
        return (float(value), JlArray(grad.T))

    def _kernel_train_step(self, session: Any, arch: str, names: tuple, arrays: tuple, x: Any, y: Any,
                           loss: str, rule: tuple) -> tuple:
        """Julia's steps with numpy: ``model_from_arch`` (pfc.parse), arrays copied in by Flux path, one step
        of the named loss and an optimiser built from ``rule``; the session is an opaque Julia struct."""
        import pyflux_compress as pfc
        from pyflux_compress.train.step import Step

        if session is None or session.fields["key"] != (arch, names, rule):
            kind, lr, b1, b2, eps, momentum, nesterov, wd = rule
            opt = (pfc.Adam(lr, (b1, b2), eps, wd) if kind == "adam" else pfc.SGD(lr, momentum, nesterov, wd))
            session = NamedTuple(key=(arch, names, rule), model=pfc.parse(arch), opt=opt)
        step = Step(session.fields["model"], pfc.losses.get(loss), session.fields["opt"])
        fields = step.arrays                            # the Julia model's fields by path
        for name, a in zip(names, arrays):
            np.copyto(fields[name], _arr(a))            # same shape and indexing on both sides
        xb = np.ascontiguousarray(_arr(x).T)            # Julia's features x batch -> batch-first
        yb = _arr(y)
        yb = yb - 1 if yb.dtype.kind in "iu" else np.ascontiguousarray(yb.T)
        out, value = _numpy("train_step")(step, xb, yb, np.random.default_rng(0))
        fields = Step(step.model, step.loss, step.opt).arrays   # BatchNorm's step rebinds its statistics
        return (session, float(value), JlArray(out.T), tuple(JlArray(fields[n]) for n in names))


class FakeMain:
    """juliacall.Main with FluxCompress loaded."""

    def __init__(self) -> None:
        self.FluxCompress = FakeFluxCompress()
