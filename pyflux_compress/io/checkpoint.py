"""Flux checkpoints in JLD2: ``pfc.load``, ``pfc.save``, ``pfc.load_state``.

* ``save(path, model)`` writes ``model_state`` exactly as ``jldsave(path; model_state = Flux.state(model))``
  (a NamedTuple tree: ``(layers = ((weight = W, bias = b, σ = ()), ...),)``) plus ``model_arch``, a String
  with the model's Flux syntax, so Python (``pfc.load``) and Julia users can rebuild the model unaided.
* ``load(path)`` returns a Chain from: a ``pfc.save`` file (model_arch + model_state); a Flux model saved
  as a struct (``JLD2.@save "m.jld2" model``: ``Flux.Chain{...}`` with Dense/Conv/BatchNorm/pooling, the
  activation read from the type parameter, e.g. ``Flux.Dense{typeof(NNlib.relu), ...}``); the output of
  ``Flux.destructure`` (an ``Optimisers.Restructure`` next to its flat parameter vector); or a bare
  ``Flux.state`` file when the state tree alone is unambiguous (Dense/Conv/BatchNorm layers; activations
  unknown -> identity, with a warning). Containers keep their form (Tuple / NamedTuple / Dict of models; a
  user's struct holding models -> :class:`JuliaObject`); ``key=`` picks a top-level entry; ``arch=`` rebuilds
  from the user's Flux syntax with the file's weights (state tree, Flux struct or ``Flux.params``); what cannot
  be rebuilt (anonymous functions, unknown structs) is named with its Julia type and path in the file.
* ``load_state(model, path, key)`` is ``Flux.loadmodel!``: walks model and state together, copies arrays,
  and names the path (``layers[2].weight``) and both shapes on a mismatch. It checks everything before
  copying anything, so a failed load leaves the model untouched.

Flux field names and order come from each layer's ``flux_fields`` / ``flux_state()`` and rebuilding from its
``from_flux`` (docs/ARCHITECTURE.md, the layer registry); nothing here names a layer class.
"""
from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np

from ..model import registry
from ..model.activations import get_activation
from ..model.walk import ROOT, join
from .jld2 import Ghost, JLD2FormatError, JuliaStruct, NamedTuple
from .jld2 import load as jld2_load
from .jld2 import save as jld2_save

class CheckpointError(ValueError):
    """A checkpoint does not match the model, or holds something this package cannot rebuild."""


class CheckpointFormatError(CheckpointError, JLD2FormatError):
    """``pfc.load`` of a file that is not valid JLD2 (or is over a limit): both a CheckpointError and the
    JLD2FormatError the reader raised, so callers catching either see it."""


# ---------------------------------------------------------------------------------------------- state trees
def state(model: Any) -> Any:
    """``Flux.state(model)`` as Python values: NamedTuple/tuple trees of arrays, numbers and ghosts ``()``.

    Each layer gives its fields (``layer.flux_state()``, Flux's order); functions used as layers (activations,
    flatten) are leaves, which Flux.state turns into ``()``; child layers become their own state trees."""
    if getattr(model, "flux_function", False):
        return ()
    return NamedTuple({jname: _leaf_state(jname, v) for jname, v in model.flux_state().items()})


def _is_layer(v: Any) -> bool:
    return hasattr(v, "forward") and hasattr(v, "flux_fields")


def _leaf_state(jname: str, v: Any) -> Any:
    if _is_layer(v):
        return state(v)
    if isinstance(v, (tuple, list)) and v and all(_is_layer(x) for x in v):
        return tuple(state(x) for x in v)
    if isinstance(v, dict) and v and all(_is_layer(x) for x in v.values()):         # named children
        return NamedTuple({k: state(x) for k, x in v.items()})
    if isinstance(v, (np.ndarray, np.float32)):
        return v
    if v is None:
        return False if jname == "bias" else None       # bias=false is the Bool false in Flux
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v)
    if isinstance(v, tuple) and all(isinstance(x, (int, np.integer)) for x in v):
        return tuple(int(x) for x in v)
    return ()                            # functions (σ, λ), RNGs, Colon: Flux.state makes them ()


def save(path: str | os.PathLike, model: Any) -> None:
    """Write ``model`` (a Chain) as a Flux checkpoint: ``model_state`` (Flux.state tree) + ``model_arch``.

    Julia: ``Flux.loadmodel!(model, JLD2.load(path, "model_state"))``. The write is atomic.
    """
    if not getattr(model, "container", False):
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
    _match(model, tree, ROOT, copies)
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


def _match(model: Any, tree: Any, where: str, copies: list) -> None:
    fields = {} if getattr(model, "flux_function", False) else model.flux_fields
    if not fields:                               # functions (state ()) and field-less structs (NamedTuple())
        empty = tree is None or (isinstance(tree, (tuple, NamedTuple)) and len(tree) == 0)
        if not empty:
            raise CheckpointError(f"{where}: model has {model!r} (no state), state has {_describe(tree)}")
        return
    if not isinstance(tree, NamedTuple):
        raise CheckpointError(f"{where}: model has {type(model).__name__} with fields {list(fields)}, state has "
                              f"{_describe(tree)}")
    if list(tree.keys()) != list(fields):
        raise CheckpointError(f"{where}: field names differ: model {type(model).__name__} has {list(fields)}, "
                              f"state has {list(tree.keys())}")
    for jname, attr in fields.items():
        dst, src, p = getattr(model, attr, None), tree[jname], f"{where}.{jname}"
        if isinstance(dst, (list, tuple)) and dst and all(_is_layer(x) for x in dst):   # children: Chain layers
            src = tuple(src.ravel()) if isinstance(src, np.ndarray) else src
            src = tuple(src.values()) if isinstance(src, NamedTuple) else src          # named branches
            if not isinstance(src, tuple):
                raise CheckpointError(f"{p}: model has {len(dst)} layers, state has {_describe(src)}")
            if len(src) != len(dst):
                raise CheckpointError(f"{p}: model has {len(dst)} layers, state has {len(src)}")
            for i, (child, sub) in enumerate(zip(dst, src)):
                _match(child, sub, join(where, f"{jname}[{i + 1}]"), copies)
        elif _is_layer(dst) and (dst.flux_fields or getattr(dst, "container", False)):  # a child layer
            _match(dst, src, join(where, jname), copies)
        elif isinstance(dst, np.ndarray) and isinstance(src, np.ndarray):
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


def load(path: str | os.PathLike, key: str | None = None, *, arch: str | None = None,
         max_bytes: int | None = None) -> Any:
    """Rebuild the Flux model(s) a JLD2 file holds (see the module docstring for the forms).

    * ``key`` picks one top-level entry (``pfc.jld2.load(path).keys()`` lists them). Without it: a
      ``pfc.save`` file gives its Chain; one entry holding models gives that entry rebuilt; several give a
      dict ``{name: rebuilt}``.
    * ``arch`` is the model's Flux syntax (``"Chain(Dense(1 => 16, relu), Dense(16 => 5), sigmoid)"``): the
      model is built from it and the weights are read from the file's ``Flux.state`` tree (or from the
      stored Flux struct). This settles what a state tree cannot say: activations, and which
      parameterless layer a ``()`` is.
    * A container of models comes back as the same container: Tuple -> tuple, NamedTuple -> NamedTuple,
      Dict -> dict, a user's struct -> :class:`JuliaObject` (fields: rebuilt models and plain values).

    Arrays are read into private memory and handed to the model without a second copy, so the peak is
    about the payload (benchmarks/bench_jld2.py). ``max_bytes`` is :func:`jld2.load`'s limit on bytes
    produced beyond the file's own (decompression, fill values; default ``$PYFLUX_JLD2_MAX_BYTES`` or
    16 MiB + 64x the file size).

    Raises :class:`CheckpointError` naming the file (and the Julia type and its path in the file) for
    anything that cannot be rebuilt (anonymous functions, unknown layer structs; ``pfc.jld2.load`` still
    reads those); :class:`CheckpointFormatError` (also a JLD2FormatError) when the file is not valid JLD2 or
    is over a limit; FileNotFoundError/OSError for the file itself; ValueError for bad arguments. Nothing
    else: an internal exception on a hostile file is reported as a CheckpointError naming its type.
    """
    where = os.fspath(path)
    if key is not None and not isinstance(key, str):
        raise ValueError(f"key must be a str (a top-level name in {where}); got {key!r}")
    if arch is not None and not isinstance(arch, str):
        raise ValueError(f"arch must be Flux syntax in a str, e.g. \"Chain(Dense(4 => 2, relu))\"; got {arch!r}")
    try:                                       # only argument errors, OSError or JLD2FormatError leave it
        values = jld2_load(path, mmap=False, max_bytes=max_bytes)
    except JLD2FormatError as err:             # already names the file
        raise CheckpointFormatError(str(err)) from None
    try:
        return _load_values(values, key, arch, where)
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
        # e.g. a layer constructor refusing a stored value (a weight of size 0), a struct missing a field
        raise CheckpointError(f"{where}: cannot rebuild the model ({type(err).__name__}: {err})") from None


def _load_values(values: dict, key: str | None, arch: str | None, where: str) -> Any:
    if key is not None:
        if key not in values:
            raise CheckpointError(f"{where}: no {key!r} in the file (top-level names: {sorted(values)})")
    if arch is not None:
        return _load_with_arch(values, key, arch, where)
    if "model_arch" in values and "model_state" in values and key in (None, "model_state", "model_arch"):
        return _load_saved(values, where)
    selected = {key: values[key]} if key is not None else values
    try:
        return _load_selected(selected, values, where, explicit=key is not None)
    except CheckpointError as err:
        raise CheckpointError(f"{where}: {err}") from None


def _load_saved(values: dict, where: str) -> Any:
    """A ``pfc.save`` file: model_arch (Flux syntax) + model_state (Flux.state tree)."""
    from ..model.syntax import parse

    arch = values["model_arch"]
    if not isinstance(arch, str):
        raise CheckpointError(f"{where}: model_arch is {type(arch).__name__}, expected a String")
    # every weight is overwritten from the file, so skip the random initialisation (most of the load time)
    try:
        model = parse(arch, init=_uninitialised, max_params=_param_budget(where))
    except ValueError as err:                   # FluxSyntaxError and the layers' own argument checks
        raise CheckpointError(f"{where}: model_arch is not a model this package can build: {err}") from None
    return _load_tree(model, values["model_state"], in_place=False)


def _load_selected(selected: dict, values: dict, where: str, explicit: bool) -> Any:
    """Rebuild the entries of ``selected`` that hold models (all of ``values`` feeds Restructure)."""
    found = {name: v for name, v in selected.items() if _holds_model(v)}
    params = [name for name, v in selected.items() if _is_params(v)]
    if not found and params:
        raise CheckpointError(f"{params[0]} is Flux.params(model) (Zygote.Params): it holds the arrays only; give "
                              "the architecture: pfc.load(path, arch=\"Chain(...)\")")
    if not found:
        what = ", ".join(f"{k} ({_jname(v)})" for k, v in sorted(selected.items())) or "nothing"
        raise CheckpointError(f"no Flux model found (top-level entries: {what}); expected model_state/"
                              "model_arch, a Flux model struct (or a container of them), a Flux.state tree, "
                              "or the output of Flux.destructure")
    out = {}
    for name, v in found.items():
        if _is_restructure(v):
            out[name] = chain_from_restructure(v, values, where=name)
        else:
            out[name] = rebuild(v, name)
    if len(out) == 1 or explicit:
        return next(iter(out.values()))
    # a Restructure's flat vector is a plain array, so several entries here really are several models
    return out


def _param_budget(where: str) -> int:
    """How many parameters an architecture may declare: every weight comes from the file, at least a byte
    each, so the file's size bounds it (never below parse's own default, so small files behave as before)."""
    from ..model.syntax import DEFAULT_MAX_PARAMS

    try:
        return max(DEFAULT_MAX_PARAMS, os.path.getsize(where))
    except OSError:
        return DEFAULT_MAX_PARAMS


def _load_with_arch(values: dict, key: str | None, arch: str, where: str) -> Any:
    """``pfc.load(path, arch=...)``: build from the user's Flux syntax, weights from the file."""
    from ..model.syntax import parse

    if not isinstance(arch, str):
        raise ValueError(f"arch must be Flux syntax in a str, e.g. \"Chain(Dense(4 => 2, relu))\"; got {arch!r}")
    model = parse(arch, init=_uninitialised, max_params=_param_budget(where))
    if key is not None:
        name = key
    elif "model_state" in values:
        name = "model_state"
    else:
        names = [k for k, v in values.items() if _is_state_tree(v) or _is_flux_struct(v) or _is_params(v)]
        if len(names) != 1:
            raise CheckpointError(f"{where}: arch= needs one Flux.state tree or Flux model in the file, found "
                                  f"{len(names)} ({sorted(names)}); pick one with key=")
        name = names[0]
    value = values[name]
    tree = _struct_as_state(value, model) if _is_flux_struct(value) else value
    try:
        if _is_params(value):
            return _load_params(model, value)
        return _load_tree(model, tree, in_place=False)
    except CheckpointError as err:
        raise CheckpointError(f"{where}: {name}: arch {arch!r} does not match the stored weights: {err}") from None


def _is_params(v: Any) -> bool:
    """``Flux.params(model)`` as JLD2 stores it: ``Zygote.Params`` with the arrays in ``order.data``."""
    return isinstance(v, JuliaStruct) and v.type_name.startswith("Zygote.Params")


def _load_params(model: Any, value: Any) -> Any:
    """Copy the arrays of a saved ``Flux.params(model)`` into ``model`` in order (Flux's parameter order is
    the order of ``model.params()``: weight before bias, layer by layer)."""
    order = value.fields.get("order")
    data = order.fields.get("data") if isinstance(order, JuliaStruct) else None
    arrays = list(np.asarray(data, dtype=object).ravel(order="F")) if data is not None else []
    arrays = [a for a in arrays if isinstance(a, np.ndarray)]
    dst = model.params()
    if len(arrays) != len(dst):
        raise CheckpointError(f"model has {len(dst)} parameter arrays, the stored Flux.params has {len(arrays)}")
    for (path, d), a in zip(dst.items(), arrays):
        if d.shape != a.shape:
            raise CheckpointError(f"{path}: shape mismatch: model {d.shape}, stored {a.shape}")
    for _, layer in ([("", model)] if not hasattr(model, "walk") else model.walk()):
        for pname in list(layer.params()):      # params() keys are the layers' attribute names
            setattr(layer, pname, np.array(arrays.pop(0), order="K"))
    return model


# ---------------------------------------------------------------------------------------------- containers
class JuliaObject:
    """A user's Julia struct that holds Flux models, as :func:`load` rebuilds it.

    ``type_name`` is the Julia type (``"Main.VAE"``); ``fields`` maps field names, in Julia's order, to
    rebuilt models (Chain or layer), containers of them, or plain values (arrays, numbers, strings, raw
    JLD2 values). Fields read as attributes (``obj.encoder``) or items (``obj["encoder"]``).
    """

    def __init__(self, type_name: str, fields: dict) -> None:
        self.__dict__["type_name"] = type_name
        self.__dict__["fields"] = dict(fields)

    def __getattr__(self, name: str) -> Any:
        fields = self.__dict__.get("fields", {})
        if name in fields:
            return fields[name]
        raise AttributeError(f"{self.__dict__.get('type_name', 'JuliaObject')} has no field {name!r} "
                             f"(fields: {list(fields)})")

    def __getitem__(self, name: str) -> Any:
        return self.fields[name]

    def __iter__(self):
        return iter(self.fields)

    def keys(self):
        return self.fields.keys()

    def items(self):
        return self.fields.items()

    def __repr__(self) -> str:
        return f"{self.type_name}(" + ", ".join(f"{k} = {_short(v)}" for k, v in self.fields.items()) + ")"


def _short(v: Any) -> str:
    if isinstance(v, np.ndarray):
        return f"Array{{{v.dtype}}}({'x'.join(map(str, v.shape)) or 'scalar'})"
    text = repr(v)
    return text if len(text) <= 200 else text[:197] + "..."


def _is_flux_struct(v: Any) -> bool:
    return isinstance(v, JuliaStruct) and v.type_name.startswith("Flux.")


def _is_restructure(v: Any) -> bool:
    return isinstance(v, JuliaStruct) and v.julia_type is not None and v.julia_type.name == "Optimisers.Restructure"


def _is_state_tree(v: Any) -> bool:
    """A Flux.state tree of a Chain: ``(layers = (...),)`` with no model structs inside."""
    if not (isinstance(v, NamedTuple) and list(v.keys()) == ["layers"]):
        return False
    layers = v.layers
    if isinstance(layers, NamedTuple):
        layers = tuple(layers.values())
    return isinstance(layers, tuple) and not any(_holds_model(x) and not _is_state_tree(x) for x in layers)


def _children(v: Any) -> list:
    if isinstance(v, (NamedTuple, dict)):
        return list(v.values())
    if isinstance(v, JuliaStruct):
        return list(v.fields.values())
    if isinstance(v, (tuple, list)):
        return list(v)
    return []


def _holds_model(v: Any, depth: int = 0) -> bool:
    """Whether ``v`` is, or contains, a Flux model struct, a Flux.state tree or a Flux.destructure output."""
    if _is_flux_struct(v) or _is_restructure(v) or _is_state_tree(v):
        return True
    if depth > 64:
        return False
    return any(_holds_model(x, depth + 1) for x in _children(v))


def rebuild(value: Any, where: str = "model") -> Any:
    """Rebuild every Flux model inside a JLD2 value, keeping the containers around them.

    Flux model structs become Chains / layers, Flux.state trees become Chains (activations unknown ->
    identity, with a warning), tuples / NamedTuples / dicts keep their form, a user's struct that holds
    models becomes a :class:`JuliaObject`; everything else is returned unchanged. ``where`` is the path
    of ``value`` in the file, used in error messages (``autoencoder.layers[2].layers[1]``).
    """
    if _is_flux_struct(value):
        if value.julia_type is not None and value.julia_type.name == "Flux.Chain":
            return chain_from_struct(value, where)
        return _layer_from_struct(value, where)
    if _is_restructure(value):
        return chain_from_restructure(value, {}, where=where)
    if _is_state_tree(value):
        return chain_from_state(value, where)
    if not _holds_model(value):
        return value
    if isinstance(value, NamedTuple):
        return NamedTuple({k: rebuild(v, f"{where}.{k}") for k, v in value.items()})
    if isinstance(value, dict):
        return {k: rebuild(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(rebuild(v, f"{where}[{i + 1}]") for i, v in enumerate(value))
    if isinstance(value, list):
        return [rebuild(v, f"{where}[{i + 1}]") for i, v in enumerate(value)]
    if isinstance(value, JuliaStruct):
        return JuliaObject(value.type_name, {k: rebuild(v, f"{where}.{k}") for k, v in value.fields.items()})
    return value


def iter_models(value: Any, where: str = "") -> Any:
    """Yield ``(path, model)`` for every model (anything with ``walk``/``params``) in a value :func:`load`
    returned; a bare model yields ``("", model)``. Used by ``pyflux-compress inspect``."""
    if hasattr(value, "flux_fields") and hasattr(value, "params"):
        yield where, value
        return
    if isinstance(value, JuliaObject):
        items = list(value.items())
    elif isinstance(value, (NamedTuple, dict)):
        items = list(value.items())
    elif isinstance(value, (tuple, list)):
        items = [(f"[{i + 1}]", v) for i, v in enumerate(value)]
    else:
        return
    for k, v in items:
        sub = f"{where}{k}" if str(k).startswith("[") else (f"{where}.{k}" if where else str(k))
        yield from iter_models(v, sub)


def _struct_as_state(value: Any, model: Any) -> Any:
    """The Flux.state tree of a stored Flux model struct, shaped after ``model`` (the user's arch).

    JLD2 <= 0.4 drops ghost fields (σ, ...) from structs, so field lists follow the model's ``flux_fields``:
    a field the struct lacks is ``()``, as Flux.state writes for functions."""
    if isinstance(value, JuliaStruct) and value.julia_type is not None and value.julia_type.name == "Flux.Chain":
        layers = value.fields.get("layers")
        if isinstance(layers, NamedTuple):
            layers = tuple(layers.values())
        if isinstance(layers, np.ndarray):
            layers = tuple(layers.ravel())
        subs = getattr(model, "layers", None) or []
        return NamedTuple(layers=tuple(_struct_as_state(v, subs[i] if i < len(subs) else None)
                                       for i, v in enumerate(layers or ())))
    if isinstance(value, JuliaStruct):
        fields = getattr(model, "flux_fields", None) or {k: k for k in value.fields}
        return NamedTuple({j: _struct_as_state(value.fields.get(j, ()), getattr(model, a, None))
                           for j, a in fields.items()})
    if isinstance(value, Ghost):
        return ()
    return value


def chain_from_state(tree: Any, where: str = ROOT) -> Any:
    """A Chain from a bare Flux.state tree, when unambiguous: each subtree's field names must identify exactly
    one registered layer (Dense, Conv, CrossCor, BatchNorm, Chain, ...). Activations are not in a state tree:
    identity. ``where`` is the tree's path in the file (error messages)."""
    def build(sub: Any, path: str) -> Any:
        keys = list(sub.keys()) if isinstance(sub, NamedTuple) else None
        cands = [c for c in registry.registered() if keys is not None and not getattr(c, "flux_function", False)
                 and list(c.flux_fields) == keys]
        built, errors = [], []
        for cls in cands:
            try:
                built.append(cls.from_flux(dict(sub.items()), lambda v, frag: build(v, join(path, frag))))
            except (ValueError, TypeError, KeyError) as err:
                errors.append(f"{cls.flux_name}: {err}")
        if len(built) > 1:
            built = [b for b in built if not b.yields_in_bare_state(dict(sub.items()))] or built
        if len(built) == 1:
            return built[0]
        if isinstance(sub, tuple) and not sub:
            what = "() is the state of any activation or flatten"
        elif len(built) > 1:
            what = f"({', '.join(keys)}) is the state of {', '.join(c.flux_name for c in cands)}"
        elif errors:
            what = "; ".join(errors)
        else:
            what = f"{_describe(sub)} matches no supported layer ({registry.supported()})"
        raise CheckpointError(f"{path}: cannot tell which layer this is: {what}. Give the architecture: "
                              "pfc.load(path, arch=\"Chain(...)\") or pfc.load_state(model, path)")

    model = build(tree, where) if isinstance(tree, NamedTuple) and list(tree.keys()) == ["layers"] else None
    if not getattr(model, "container", False):
        raise CheckpointError("the state tree is not a Chain state (layers = (...),)")
    warnings.warn("the file holds only Flux.state (no model_arch): activations are unknown and were set to "
                  "identity; give the real architecture: pfc.load(path, arch=\"Chain(...)\")", stacklevel=3)
    return _load_tree(model, tree, in_place=False)


def chain_from_restructure(re: Any, values: dict, where: str = ROOT) -> Any:
    """A Chain from ``flat, re = Flux.destructure(model)`` saved together (``jldsave(f; flat, re)``).

    ``re.model`` holds the architecture (and the weights at destructure time); the current weights are the
    one top-level flat vector of length ``re.length``, sliced by ``re.offsets`` (column-major, as Julia's
    ``reshape``). Without such a vector the model's own weights are used, with a warning.
    """
    model_struct = re.fields.get("model")
    chain = chain_from_struct(model_struct, join(where, "model"))
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
    name = str(jt) if jt is not None else "?"
    try:
        return get_activation(name.rsplit(".", 1)[-1].lstrip("#"))
    except ValueError:
        raise CheckpointError(f"{where}: activation {name} is not supported") from None


def chain_from_struct(value: Any, where: str = ROOT) -> Any:
    """A Chain from a ``Flux.Chain`` struct value (as ``JLD2.@save`` stores a model)."""
    if not (isinstance(value, JuliaStruct) and value.julia_type is not None and
            value.julia_type.name == "Flux.Chain"):
        raise CheckpointError(f"{where}: expected a Flux.Chain, got {_jname(value)}")
    return _layer_from_struct(value, where)


def _jname(v: Any) -> str:
    if isinstance(v, (JuliaStruct, Ghost)):
        return v.type_name
    return type(v).__name__


def _unsupported(where: str, what: Any) -> CheckpointError:
    return CheckpointError(f"{where}: unsupported Julia layer type {what} (supported: "
                           f"{registry.supported(lambda c: c.flux_name != 'activation')}, NNlib activations)")


def _layer_from_struct(v: Any, where: str):
    """One layer from its Julia value: a registered ``Flux.<name>`` struct (its ``from_flux`` sizes it, then its
    arrays are copied in) or a function used as a layer (``flatten``, an NNlib activation)."""
    if isinstance(v, Ghost):
        cls = registry.by_name(v.type_name.rsplit(".", 1)[-1].lstrip("#"))
        if cls is not None and getattr(cls, "flux_function", False) and cls.flux_name != "activation":
            return cls.from_flux({}, None)
        try:
            return _activation(v.type_name, where)
        except CheckpointError:
            pass
        if "#" in v.type_name.rsplit(".", 1)[-1].lstrip("#"):  # Julia names closures #N#M: only the type is stored
            raise CheckpointError(f"{where}: anonymous function {v.type_name} cannot be rebuilt (JLD2 stores "
                                  "only its type, not its code); load the weights into your own architecture "
                                  "with pfc.load(path, arch=\"Chain(...)\"), or read the raw tree with "
                                  "pfc.jld2.load(path)") from None
        raise _unsupported(where, v.type_name) from None
    if not isinstance(v, JuliaStruct) or v.julia_type is None:
        raise CheckpointError(f"{where}: unsupported Julia layer {_describe(v)}")
    jt = v.julia_type
    module, _, short = jt.name.rpartition(".")
    cls = registry.by_name(short) if module == "Flux" else None
    if cls is None or getattr(cls, "flux_function", False):
        raise _unsupported(where, jt)
    fields = dict(v.fields)
    fields["#params"] = tuple(jt.params)     # the struct's type parameters (Upsample's mode, a connection)
    idx = cls.flux_activation_param
    if idx is not None:
        act = _activation(jt.params[idx] if len(jt.params) > idx else None, where)
        fields.update({j: act for j, attr in cls.flux_fields.items() if attr == "activation"})
    try:
        layer = cls.from_flux(fields, lambda val, frag: _layer_from_struct(val, join(where, frag)))
    except (ValueError, TypeError, KeyError) as err:
        raise CheckpointError(f"{where}: {jt.name}: {err}") from None
    for jname, attr in layer.flux_fields.items():
        src, dst = fields.get(jname), getattr(layer, attr, None)
        if isinstance(src, np.ndarray) and src.dtype.kind in "fiu" and src.ndim:
            if not isinstance(dst, np.ndarray) or dst.shape != src.shape:
                raise CheckpointError(f"{where}.{jname}: stored {_describe(src)} does not fit the layer "
                                      f"({None if dst is None else getattr(dst, 'shape', dst)})")
            dst[...] = src.astype(dst.dtype, copy=False)
    return layer


def inspect(path: str | os.PathLike, max_depth: int) -> dict[str, Any]:
    """What ``pyflux-compress inspect`` shows of a JLD2 file: the Flux model's parameter rows (and the loader's
    warnings as notes), or, when the file holds no model this package can rebuild, its generic contents."""
    from ..model.summary import parameter_rows
    from .jld2.inspect import render

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = load(path)
    except JLD2FormatError:
        raise  # not a readable JLD2 file at all: bad input
    except (ValueError, TypeError, KeyError, NotImplementedError, ImportError) as err:
        reason = " ".join(str(err).split())
        prefix = f"{os.fspath(path)}: "
        return {"file": os.fspath(path), "kind": "generic", "reason": reason.removeprefix(prefix),
                **render(jld2_load(path), max_depth)}
    notes = [" ".join(str(w.message).split()) for w in caught]
    if not hasattr(model, "params"):           # a container of models: each model's rows under its path
        kind = model.type_name if isinstance(model, JuliaObject) else \
            "NamedTuple" if isinstance(model, NamedTuple) else "Dict" if isinstance(model, dict) else "Tuple"
        models = [{"file": sub or ROOT, "kind": "flux", **parameter_rows(m)} for sub, m in iter_models(model)]
        return {"file": os.fspath(path), "kind": "container", "container": kind, "notes": notes, "models": models}
    return {"file": os.fspath(path), "kind": "flux", "notes": notes, **parameter_rows(model)}


__all__ = ["load", "save", "load_state", "state", "chain_from_state", "chain_from_struct",
           "chain_from_restructure", "rebuild", "iter_models", "JuliaObject", "inspect", "CheckpointError",
           "JLD2FormatError"]
