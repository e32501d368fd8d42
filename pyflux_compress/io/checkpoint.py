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
    for layer, attr, value in copies:          # all checks passed: now copy
        dst = getattr(layer, attr)
        if value is False:
            dst[...] = 0
        elif in_place:
            dst[...] = np.asarray(value).astype(dst.dtype, copy=False)
        else:                                  # a fresh model takes the stored dtype (e.g. a Float64 model)
            setattr(layer, attr, np.array(value, order="K"))
    return model


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
    return np.zeros(dims, dtype=np.float32)  # calloc'd lazily: no pages touched until written


def load(path: str | os.PathLike) -> Any:
    """Rebuild a Chain from a JLD2 file (see module docstring for the three supported forms)."""
    from ..model.syntax import parse

    values = jld2_load(path)
    where = os.fspath(path)
    if "model_arch" in values and "model_state" in values:
        arch = values["model_arch"]
        if not isinstance(arch, str):
            raise CheckpointError(f"{where}: model_arch is {type(arch).__name__}, expected a String")
        # every weight is overwritten from the file, so skip the random initialisation (most of the load time)
        model = parse(arch, init=_uninitialised)
        return _load_tree(model, values["model_state"], in_place=False)
    structs = {k: v for k, v in values.items() if isinstance(v, JuliaStruct) and v.type_name.startswith("Flux.")}
    if structs:
        name, value = next(iter(structs.items()))
        try:
            return chain_from_struct(value)
        except CheckpointError as err:
            raise CheckpointError(f"{where}: {name}: {err}") from None
    restructures = {k: v for k, v in values.items() if isinstance(v, JuliaStruct) and v.julia_type is not None
                    and v.julia_type.name == "Optimisers.Restructure"}
    if restructures:
        name, value = next(iter(restructures.items()))
        try:
            return chain_from_restructure(value, values)
        except CheckpointError as err:
            raise CheckpointError(f"{where}: {name}: {err}") from None
    tree = values.get("model_state")
    if tree is None:
        cands = [v for v in values.values() if isinstance(v, NamedTuple) and list(v.keys()) == ["layers"]]
        tree = cands[0] if len(cands) == 1 else None
    if tree is not None:
        try:
            return chain_from_state(tree)
        except CheckpointError as err:
            raise CheckpointError(f"{where}: {err}") from None
    raise CheckpointError(f"{where}: no Flux model found (top-level names: {sorted(values)}); expected "
                          "model_state/model_arch, a Flux.Chain struct or a Flux.state tree")


def chain_from_state(tree: Any) -> Any:
    """A Chain from a bare Flux.state tree, when unambiguous: each subtree's field names must identify exactly
    one registered layer (Dense, Conv, CrossCor, BatchNorm, Chain, ...). Activations are not in a state tree:
    identity."""
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
        raise CheckpointError(f"{path}: cannot tell which layer this is: {what}. Build the model and use "
                              "pfc.load_state(model, path) with its architecture")

    model = build(tree, ROOT) if isinstance(tree, NamedTuple) and list(tree.keys()) == ["layers"] else None
    if not getattr(model, "container", False):
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
            raise _unsupported(where, v.type_name) from None
    if not isinstance(v, JuliaStruct) or v.julia_type is None:
        raise CheckpointError(f"{where}: unsupported Julia layer {_describe(v)}")
    jt = v.julia_type
    module, _, short = jt.name.rpartition(".")
    cls = registry.by_name(short) if module == "Flux" else None
    if cls is None or getattr(cls, "flux_function", False):
        raise _unsupported(where, jt)
    fields = dict(v.fields)
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
    return {"file": os.fspath(path), "kind": "flux", "notes": notes, **parameter_rows(model)}


__all__ = ["load", "save", "load_state", "state", "chain_from_state", "chain_from_struct",
           "chain_from_restructure", "inspect", "CheckpointError", "JLD2FormatError"]
