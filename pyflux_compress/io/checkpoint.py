"""Flux checkpoints in JLD2: ``pfc.load``, ``pfc.save``, ``pfc.load_state``.

* ``save(path, model)`` writes ``model_state`` exactly as ``jldsave(path; model_state = Flux.state(model))``
  (a NamedTuple tree: ``(layers = ((weight = W, bias = b, σ = ()), ...),)``) plus ``model_arch``, a String
  with the model's Flux syntax, so Python (``pfc.load``) and Julia users can rebuild the model unaided.
* ``load(path)`` returns a Chain from: a ``pfc.save`` file (model_arch + model_state); a Flux model saved
  as a struct (``JLD2.@save "m.jld2" model``: ``Flux.Chain{...}`` with Dense/Conv/BatchNorm/pooling, the
  activation read from the type parameter, e.g. ``Flux.Dense{typeof(NNlib.relu), ...}``); the output of
  ``Flux.destructure`` (an ``Optimisers.Restructure`` next to its flat parameter vector); or a bare
  ``Flux.state`` file when the state tree alone is unambiguous (Dense/Conv/BatchNorm layers; activations
  unknown -> identity, with a warning).
* ``load_state(model, path, key)`` is ``Flux.loadmodel!``: walks model and state together, copies arrays,
  and names the path (``layers[2].weight``) and both shapes on a mismatch. It checks everything before
  copying anything, so a failed load leaves the model untouched.

Flux field names and order come from each layer's ``flux_fields`` (docs/ARCHITECTURE.md).
"""
from __future__ import annotations

import contextlib
import os
import warnings
from typing import Any

import numpy as np

from .jld2 import Ghost, JLD2FormatError, JuliaStruct, NamedTuple
from .jld2 import load as jld2_load
from .jld2 import save as jld2_save

FLOAT32_FIELDS = {"ϵ", "momentum"}   # BatchNorm scalars Flux stores as Float32


class CheckpointError(ValueError):
    """A checkpoint does not match the model, or holds something this package cannot rebuild."""


class CheckpointFormatError(CheckpointError, JLD2FormatError):
    """``pfc.load`` of a file that is not valid JLD2 (or is over a limit): both a CheckpointError and the
    JLD2FormatError the reader raised, so callers catching either see it."""


# ---------------------------------------------------------------------------------------------- state trees
def state(model: Any) -> Any:
    """``Flux.state(model)`` as Python values: NamedTuple/tuple trees of arrays, numbers and ghosts ``()``."""
    from ..model.chain import Chain

    if isinstance(model, Chain):
        return NamedTuple(layers=tuple(state(layer) for layer in model.layers))
    fields = getattr(model, "flux_fields", None)
    if not fields:
        # a field-less struct (GlobalMeanPool) has the empty NamedTuple as state; functions used as
        # layers (activations, flatten) are leaves, which Flux.state turns into ()
        return NamedTuple() if getattr(model, "flux_name", "") == "GlobalMeanPool" else ()
    out = {}
    for jname, attr in fields.items():
        out[jname] = _leaf_state(jname, getattr(model, attr, None))
    return NamedTuple(out)


def _leaf_state(jname: str, v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return v
    if v is None and jname == "dims":
        return ()                                       # Dropout dims=: (Colon, a singleton) -> ()
    if v is None:
        return False if jname == "bias" else None       # Dense/Conv bias=false is the Bool false
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return np.float32(v) if jname in FLOAT32_FIELDS else float(v)
    if isinstance(v, tuple) and all(isinstance(x, (int, np.integer)) for x in v):
        return tuple(int(x) for x in v)
    return ()                            # functions (σ, λ), RNGs, Colon: Flux.state makes them ()


def save(path: str | os.PathLike, model: Any) -> None:
    """Write ``model`` (a Chain) as a Flux checkpoint: ``model_state`` (Flux.state tree) + ``model_arch``.

    Julia: ``Flux.loadmodel!(model, JLD2.load(path, "model_state"))``. The write is atomic.
    """
    from ..model.chain import Chain

    if not isinstance(model, Chain):
        raise ValueError(f"model must be a Chain; got {type(model).__name__}")
    jld2_save(path, model_state=state(model), model_arch=str(model))


# ---------------------------------------------------------------------------------------------- load_state
def load_state(model: Any, path_or_state: Any, key: str = "model_state") -> Any:
    """Copy a Flux.state tree (from a file path, or given directly) into ``model`` in place; returns model.

    Like ``Flux.loadmodel!``: keys must match at every level, arrays must match in size (dtype converts),
    non-array leaves are ignored, a Bool ``false`` bias zeroes the destination bias.
    """
    if not hasattr(model, "flux_fields"):
        raise ValueError(f"model must be a Chain or layer; got {type(model).__name__}")
    if not isinstance(key, str):
        raise ValueError(f"key must be a str (a top-level name in the file); got {key!r}")
    if isinstance(path_or_state, (str, os.PathLike)):
        try:
            tree = jld2_load(path_or_state, key)
        except KeyError:
            names = sorted(jld2_load(path_or_state))
            raise CheckpointError(f"{os.fspath(path_or_state)}: no {key!r} in the file (top-level names: "
                                  f"{names})") from None
    else:
        tree = path_or_state
    return _load_tree(model, tree, in_place=True)


def _load_tree(model: Any, tree: Any, in_place: bool) -> Any:
    """Check the whole tree first, then copy. ``in_place=False`` (fresh models built by :func:`load`)
    swaps in a copy of each stored array (keeping its dtype) instead of writing into the old one: the
    stored arrays are Julia-ordered (F order), and a same-order copy is a fast memcpy where an in-place
    copy would transpose."""
    copies: list[tuple[Any, str, Any]] = []
    _match(model, tree, "", copies)
    taken: set[int] = set()
    for layer, attr, value in copies:          # all checks passed: now copy
        dst = getattr(layer, attr)
        if value is False and in_place:
            dst[...] = 0
        elif value is False:                   # a fresh model's placeholder may be a read-only view
            setattr(layer, attr, np.zeros(dst.shape, dst.dtype))
        elif in_place:
            dst[...] = np.asarray(value).astype(dst.dtype, copy=False)
        elif _private(value) and id(value) not in taken:
            # read into private memory for this load (jld2.load(mmap=False)): take it, no second copy
            taken.add(id(value))
            setattr(layer, attr, value)
        else:                                  # a fresh model takes the stored dtype (e.g. a Float64 model)
            setattr(layer, attr, np.array(value, order="K"))
    return model


def _private(a: Any) -> bool:
    """An array owning writeable private memory (not a memory map, not a view of a shared buffer)."""
    if not isinstance(a, np.ndarray) or isinstance(a, np.memmap) or not a.flags.writeable:
        return False
    base = a
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    if isinstance(base, memoryview):         # np.frombuffer(bytearray) keeps a memoryview of it
        base = base.obj
    return isinstance(base, (bytearray, np.ndarray)) and not isinstance(base, np.memmap)


def _match(model: Any, tree: Any, path: str, copies: list) -> None:
    from ..model.chain import Chain

    where = path or "model"
    if isinstance(model, Chain):
        layers = tree.layers if isinstance(tree, NamedTuple) and list(tree.keys()) == ["layers"] else None
        if isinstance(layers, np.ndarray):
            layers = tuple(layers.ravel())
        if not isinstance(layers, tuple):
            raise CheckpointError(f"{where}: model is a Chain, state has {_describe(tree)} "
                                  "(expected (layers = (...),))")
        if len(layers) != len(model.layers):
            raise CheckpointError(f"{where}.layers: model has {len(model.layers)} layers, state has {len(layers)}")
        for i, (layer, sub) in enumerate(zip(model.layers, layers)):
            _match(layer, sub, f"{path + '.' if path else ''}layers[{i + 1}]", copies)
        return
    fields = getattr(model, "flux_fields", None) or {}
    if not fields:
        empty = tree is None or (isinstance(tree, (tuple, NamedTuple)) and len(tree) == 0)
        if not empty:
            raise CheckpointError(f"{where}: model has {model!r} (no state), state has {_describe(tree)}")
        return
    if not isinstance(tree, NamedTuple):
        raise CheckpointError(f"{where}: model has {model!r} with fields {list(fields)}, state has "
                              f"{_describe(tree)}")
    if list(tree.keys()) != list(fields):
        raise CheckpointError(f"{where}: field names differ: model {type(model).__name__} has {list(fields)}, "
                              f"state has {list(tree.keys())}")
    for jname, attr in fields.items():
        dst, src = getattr(model, attr, None), tree[jname]
        p = f"{where}.{jname}"
        if isinstance(dst, np.ndarray) and isinstance(src, np.ndarray):
            if dst.shape != src.shape:
                raise CheckpointError(f"{p}: shape mismatch: model {dst.shape}, state {src.shape}")
            copies.append((model, attr, src))
        elif isinstance(dst, np.ndarray) and src is False:
            copies.append((model, attr, False))
        elif isinstance(dst, np.ndarray):
            raise CheckpointError(f"{p}: model has an array of shape {dst.shape}, state has {_describe(src)}")
        elif isinstance(src, np.ndarray) and dst is None and jname == "bias":
            if np.any(src != 0):
                raise CheckpointError(f"{p}: model has bias=false, state has a non-zero bias of shape "
                                      f"{src.shape}")
        elif isinstance(src, np.ndarray) and dst is None:
            raise CheckpointError(f"{p}: model has nothing, state has an array of shape {src.shape}")
        # other leaves (activations, stride, eps, ...) are ignored, as Flux.loadmodel! does


def _describe(v: Any) -> str:
    if isinstance(v, np.ndarray):
        return f"an array of shape {v.shape}"
    if isinstance(v, NamedTuple):
        return f"a NamedTuple with fields {list(v.keys())}"
    if isinstance(v, tuple):
        return f"a tuple of {len(v)} elements"
    return f"{type(v).__name__} {v!r}"


# ---------------------------------------------------------------------------------------------- load
def _uninitialised(rng: Any, *dims: int) -> np.ndarray:
    """A read-only zero view of shape ``dims`` that allocates nothing: the architecture of a file is built
    for free, and every weight is then replaced by the stored array (checked against it first), so a
    header naming ``Dense(20000 => 20000)`` costs nothing when the file holds no such array."""
    return np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), shape=dims, strides=(0,) * len(dims),
                                           writeable=False)


def load(path: str | os.PathLike, *, max_bytes: int | None = None) -> Any:
    """Rebuild a Chain from a JLD2 file (see module docstring for the three supported forms).

    Arrays are read into private memory and handed to the model without a second copy, so the peak is
    about the payload (benchmarks/bench_jld2.py). ``max_bytes`` is :func:`jld2.load`'s limit on bytes
    produced beyond the file's own (decompression, fill values; default ``$PYFLUX_JLD2_MAX_BYTES`` or
    16 MiB + 64x the file size).

    Raises FileNotFoundError for a missing file and :class:`CheckpointError` naming the file for
    anything else: :class:`CheckpointFormatError` (also a JLD2FormatError) when the file is not valid JLD2.
    """
    where = os.fspath(path)
    try:                                       # only argument errors, OSError or JLD2FormatError leave it
        values = jld2_load(path, mmap=False, max_bytes=max_bytes)
    except JLD2FormatError as err:             # already names the file
        raise CheckpointFormatError(str(err)) from None
    try:
        return _rebuild(values, where)
    except JLD2FormatError as err:
        raise CheckpointFormatError(f"{where}: {err}") from None
    except CheckpointError as err:
        msg = str(err)
        raise CheckpointError(msg if msg.startswith(where) else f"{where}: {msg}") from None
    except RecursionError:
        raise CheckpointError(f"{where}: the model structure is nested too deeply") from None
    except MemoryError:
        raise CheckpointError(f"{where}: the model described by the file does not fit in memory") from None
    except (ValueError, IndexError, KeyError, TypeError, AttributeError, OverflowError) as err:
        # e.g. model_arch that does not parse (FluxSyntaxError), or a struct missing a field
        raise CheckpointError(f"{where}: cannot rebuild the model ({type(err).__name__}: {err})") from None


def _rebuild(values: dict, where: str) -> Any:
    from ..model.syntax import parse

    if "model_arch" in values and "model_state" in values:
        arch = values["model_arch"]
        if not isinstance(arch, str):
            raise CheckpointError(f"{where}: model_arch is {type(arch).__name__}, expected a String")
        # every weight is overwritten from the file, so skip the random initialisation (most of the load time)
        try:
            model = parse(arch, init=_uninitialised)
        except ValueError as err:               # FluxSyntaxError and the layers' own argument checks
            raise CheckpointError(f"{where}: model_arch is not a model this package can build: {err}") from None
        return _load_tree(model, values["model_state"], in_place=False)
    structs = {k: v for k, v in values.items() if isinstance(v, JuliaStruct) and v.type_name.startswith("Flux.")}
    if structs:
        name, value = next(iter(structs.items()))
        with _naming(f"{where}: {name}"):
            return chain_from_struct(value)
    restructures = {k: v for k, v in values.items() if isinstance(v, JuliaStruct) and v.julia_type is not None
                    and v.julia_type.name == "Optimisers.Restructure"}
    if restructures:
        name, value = next(iter(restructures.items()))
        with _naming(f"{where}: {name}"):
            return chain_from_restructure(value, values)
    tree = values.get("model_state")
    if tree is None:
        cands = [v for v in values.values() if isinstance(v, NamedTuple) and list(v.keys()) == ["layers"]]
        tree = cands[0] if len(cands) == 1 else None
    if tree is not None:
        with _naming(where):
            return chain_from_state(tree)
    raise CheckpointError(f"{where}: no Flux model found (top-level names: {sorted(values)}); expected "
                          "model_state/model_arch, a Flux.Chain struct or a Flux.state tree")


@contextlib.contextmanager
def _naming(prefix: str):
    """Prefix CheckpointErrors with ``prefix``; a layer constructor's ValueError (e.g. a stored weight of
    size 0 gives ``Dense out must be >= 1``) becomes a CheckpointError saying the stored values build no
    layer."""
    try:
        yield
    except CheckpointError as err:
        raise CheckpointError(f"{prefix}: {err}") from None
    except ValueError as err:
        raise CheckpointError(f"{prefix}: the stored values do not describe a layer that can be built: {err}") \
            from None


def chain_from_state(tree: Any) -> Any:
    """A Chain from a bare Flux.state tree, when unambiguous: Dense, Conv, CrossCor and BatchNorm layers
    and nested Chains (their field names identify them). Activations are not in a state tree: identity."""
    from ..model.chain import Chain
    from ..model.layers import BatchNorm, Conv, CrossCor, Dense

    def build(sub, path):
        keys = list(sub.keys()) if isinstance(sub, NamedTuple) else None
        if keys == ["layers"] and isinstance(sub.layers, tuple):
            return Chain(*[build(s, f"{path}layers[{i + 1}]") for i, s in enumerate(sub.layers)])
        w = sub["weight"] if keys and "weight" in keys else None
        if keys == ["weight", "bias", "σ"] and isinstance(w, np.ndarray) and w.ndim == 2:
            return Dense(w.shape[1], w.shape[0], bias=sub.bias is not False)
        if keys in (list(Conv.flux_fields), list(CrossCor.flux_fields)) and isinstance(w, np.ndarray) \
                and w.ndim == 4:
            cls = Conv if keys == list(Conv.flux_fields) else CrossCor
            if cls is Conv and sub.groups != 1:
                raise CheckpointError(f"{path.rstrip('.')}: Conv with groups={sub.groups} is not supported")
            return cls(tuple(w.shape[:2]), (w.shape[2], w.shape[3]), stride=tuple(sub.stride),
                       pad=tuple(sub.pad), dilation=tuple(sub.dilation), bias=sub.bias is not False)
        if keys == list(BatchNorm.flux_fields):
            return BatchNorm(int(sub.chs), eps=_f32(sub["ϵ"]), momentum=_f32(sub.momentum),
                             affine=bool(sub.affine), track_stats=bool(sub.track_stats), active=sub.active)
        if isinstance(sub, tuple) and not sub:
            what = "() is the state of any activation or flatten"
        elif keys == ["k", "pad", "stride"]:
            what = "(k, pad, stride) is the state of both MaxPool and MeanPool"
        else:
            what = f"{_describe(sub)} matches no supported layer"
        raise CheckpointError(
            f"{path.rstrip('.') or 'state'}: cannot tell which layer this is: {what}. Build the model and "
            "use pfc.load_state(model, path) with its architecture")

    model = build(tree, "")
    if not isinstance(model, Chain):
        raise CheckpointError("the state tree is not a Chain state (layers = (...),)")
    warnings.warn("the file holds only Flux.state (no model_arch): activations are unknown and were set to "
                  "identity; use pfc.load_state(model, path) with the real architecture", stacklevel=3)
    return _load_tree(model, tree, in_place=False)


def chain_from_restructure(re: Any, values: dict) -> Any:
    """A Chain from ``flat, re = Flux.destructure(model)`` saved together (``jldsave(f; flat, re)``).

    ``re.model`` holds the architecture (and the weights at destructure time); the current weights are the
    one top-level flat vector of length ``re.length``, sliced by ``re.offsets`` (column-major, as Julia's
    ``reshape``). Without such a vector the model's own weights are used, with a warning.
    """
    model_struct = re.fields.get("model")
    chain = chain_from_struct(model_struct, "model")
    length = re.fields.get("length")
    flats = [v for v in values.values() if isinstance(v, np.ndarray) and v.ndim == 1 and v.dtype.kind == "f"
             and v.size == length]
    if len(flats) != 1:
        warnings.warn(f"no single flat parameter vector of length {length} next to the Restructure: using the "
                      "weights stored inside it (those at destructure time)", stacklevel=3)
        return chain
    flat = flats[0]
    tree = _offsets_to_state(re.fields.get("offsets"), state(chain), flat, "offsets")
    return _load_tree(chain, tree, in_place=False)


def _offsets_to_state(offsets: Any, st: Any, flat: np.ndarray, where: str) -> Any:
    """Replace every array of the state tree ``st`` by its slice of ``flat`` at the matching offset."""
    if isinstance(st, np.ndarray):
        if not isinstance(offsets, int) or offsets < 0 or offsets + st.size > flat.size:
            raise CheckpointError(f"{where}: offset {offsets!r} does not fit an array of {st.size} elements "
                                  f"in a flat vector of {flat.size}")
        return flat[offsets:offsets + st.size].reshape(st.shape, order="F")
    if isinstance(st, NamedTuple) and isinstance(offsets, NamedTuple):
        return NamedTuple({k: _offsets_to_state(offsets[k] if k in offsets else None, v, flat, f"{where}.{k}")
                           for k, v in st.items()})
    if isinstance(st, tuple) and isinstance(offsets, tuple) and len(st) == len(offsets):
        return tuple(_offsets_to_state(o, v, flat, f"{where}[{i + 1}]")
                     for i, (o, v) in enumerate(zip(offsets, st)))
    return st


# ---------------------------------------------------------------------------------------------- structs
def _activation(jt: Any, where: str):
    from ..model.activations import get_activation

    name = str(jt) if jt is not None else "?"
    short = name.rsplit(".", 1)[-1].lstrip("#")
    try:
        return get_activation(short)
    except ValueError:
        raise CheckpointError(f"{where}: activation {name} is not supported") from None


def chain_from_struct(value: Any, where: str = "model") -> Any:
    """A Chain from a ``Flux.Chain`` struct value (as ``JLD2.@save`` stores a model)."""
    from ..model.chain import Chain

    if not (isinstance(value, JuliaStruct) and value.julia_type is not None and
            value.julia_type.name == "Flux.Chain"):
        raise CheckpointError(f"{where}: expected a Flux.Chain, got {_jname(value)}")
    layers = value.fields.get("layers")
    if isinstance(layers, NamedTuple):
        layers = tuple(layers.values())
    elif isinstance(layers, np.ndarray):
        layers = tuple(layers.ravel())
    if not isinstance(layers, tuple):
        raise CheckpointError(f"{where}: Chain layers are {_describe(layers)}")
    return Chain(*[_layer_from_struct(v, f"{where}.layers[{i + 1}]") for i, v in enumerate(layers)])


def _jname(v: Any) -> str:
    if isinstance(v, JuliaStruct):
        return v.type_name
    if isinstance(v, Ghost):
        return v.type_name
    return type(v).__name__


def _layer_from_struct(v: Any, where: str):
    from ..model import layers as L

    if isinstance(v, Ghost):                  # a function used as a layer: relu, flatten, ...
        short = v.type_name.rsplit(".", 1)[-1].lstrip("#")
        if short == "flatten":
            return L.flatten
        try:
            return _activation(v.type_name, where)
        except CheckpointError:
            raise CheckpointError(f"{where}: unsupported Julia layer type {v.type_name}") from None
    if not isinstance(v, JuliaStruct) or v.julia_type is None:
        raise CheckpointError(f"{where}: unsupported Julia layer {_describe(v)}")
    jt, f = v.julia_type, v.fields
    name = jt.name
    if name == "Flux.Chain":
        return chain_from_struct(v, where)
    if name == "Flux.Dense":
        act = _activation(jt.params[0] if jt.params else None, where)
        w = f["weight"]
        layer = L.Dense(w.shape[1], w.shape[0], act, bias=f["bias"] is not False)
        return _fill(layer, {"weight": w, "bias": f["bias"]}, where)
    if name in ("Flux.Conv", "Flux.CrossCor"):
        act = _activation(jt.params[2] if len(jt.params) > 2 else None, where)
        w = f["weight"]
        cls = L.Conv if name == "Flux.Conv" else L.CrossCor
        groups = int(f.get("groups", 1))
        if groups != 1:
            raise CheckpointError(f"{where}: {name} with groups={groups} is not supported")
        layer = cls(tuple(w.shape[:2]), (w.shape[2], w.shape[3]), act, stride=tuple(f["stride"]),
                    pad=tuple(f["pad"]), dilation=tuple(f["dilation"]), bias=f["bias"] is not False)
        return _fill(layer, {"weight": w, "bias": f["bias"]}, where)
    if name == "Flux.BatchNorm":
        act = _activation(jt.params[0] if jt.params else None, where)
        layer = L.BatchNorm(int(f["chs"]), act, eps=_f32(f["ϵ"]), momentum=_f32(f["momentum"]),
                            affine=bool(f["affine"]), track_stats=bool(f["track_stats"]),
                            active=f.get("active"))
        return _fill(layer, {"beta": f["β"], "gamma": f["γ"], "mu": f["μ"], "sigma2": f["σ²"]}, where)
    if name in ("Flux.MaxPool", "Flux.MeanPool"):
        cls = L.MaxPool if name == "Flux.MaxPool" else L.MeanPool
        return cls(tuple(f["k"]), pad=tuple(f["pad"]), stride=tuple(f["stride"]))
    if name == "Flux.GlobalMeanPool":
        return L.GlobalMeanPool()
    if name == "Flux.Dropout":
        return L.Dropout(float(f["p"]))
    raise CheckpointError(f"{where}: unsupported Julia layer type {jt}")


def _f32(x: Any) -> float:
    """A stored Float32 as the short decimal Julia prints (1f-5 -> 1e-05, not 9.99999974e-06)."""
    return float(str(np.float32(x)))


def _fill(layer: Any, arrays: dict, where: str):
    for attr, src in arrays.items():
        dst = getattr(layer, attr)
        if src is None or src is False:
            continue
        if not isinstance(src, np.ndarray) or dst is None or dst.shape != src.shape:
            raise CheckpointError(f"{where}.{attr}: stored {_describe(src)} does not fit the layer "
                                  f"({None if dst is None else dst.shape})")
        dst[...] = src.astype(dst.dtype, copy=False)
    return layer


__all__ = ["load", "save", "load_state", "state", "chain_from_state", "chain_from_struct",
           "chain_from_restructure", "CheckpointError", "JLD2FormatError"]
