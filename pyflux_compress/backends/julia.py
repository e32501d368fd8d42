"""The julia backend: the same public operations, computed by the bundled Julia package FluxCompress.

Imported only when the julia backend is chosen (``pfc.set_backend("julia")``); importing this module does
not start Julia — :func:`julia` does, on first use, through juliacall.

Data crossing the bridge, and why (almost) nothing is copied:

* our parameter arrays already have Julia's shape and indexing (Dense ``weight (out, in)``, Conv
  ``weight (kw, kh, cin, cout)``), so a numpy array is handed to Julia as is; juliacall wraps it as a
  ``PyArray`` view of the same memory (any strides: C- or F-ordered alike), no transpose, no copy;
* batch-first data ``(N, features...)`` is Julia's ``(features..., N)`` array with the dims reversed:
  ``X.transpose()`` is a zero-copy view whose memory is exactly Julia's column-major layout;
* Julia results come back as juliacall ``ArrayValue`` objects; ``np.asarray`` on them is a zero-copy
  F-ordered view of Julia's memory (kept alive by the view);
* orders: Julia's column-major linear index of an array equals numpy's ``ravel(order="F")`` index of the
  same-shaped array. Where an order decides a result (magnitude ties, k-means sums), FluxCompress uses
  numpy's C order explicitly (``FluxCompress.corder``), as the numpy backend does.

Each public function here has the signature and the result type of the numpy function of the same name
(``backend.dispatch`` routes to it after the numpy module's ``validate_<name>`` accepted the arguments).
Operations whose work is Python-side by definition (the compressed archive format, the prune/fine-tune loop
around ``pfc.fit``) run their numpy implementation; inside them, dispatched calls still go to Julia.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from ..model.walk import map_layers, modules
from . import detect

__all__ = ["julia", "to_flux", "from_flux", "sparsity", "count_params", "prune", "prune_iteratively",
           "sparsify", "prune_structured", "lowrank", "quantize", "share_weights", "distill",
           "save_compressed", "load_compressed", "size_report", "sensitivity"]

_JL: Any = None


# ------------------------------------------------------------------------------------------------ start-up
def julia() -> Any:
    """juliacall's ``Main`` with FluxCompress loaded; starts Julia on first call.

    Never downloads Julia: the executable found by :func:`detect.find_julia` is pinned through
    ``PYTHON_JULIAPKG_EXE`` before juliacall is imported (juliapkg would otherwise install one).
    ``PYTHON_JULIAPKG_OFFLINE`` is honoured: juliapkg then skips package installation, which works only
    when the project was resolved before (checked first, with a clear error).
    """
    global _JL
    if _JL is not None:
        return _JL
    info = detect.find_julia()
    if not info.found:
        raise RuntimeError(detect.missing_julia_message(info))
    if info.offline and not info.resolved:
        raise RuntimeError(f"PYTHON_JULIAPKG_OFFLINE is set but the juliapkg project {info.project} was never "
                           "resolved, so FluxCompress/Flux/JLD2 are not installed there; run once without it.")
    if not detect.juliacall_available():
        raise RuntimeError(f"Julia found at {info.executable}, but the Python package juliacall is missing: "
                           "pip install juliacall")
    os.environ.setdefault("PYTHON_JULIAPKG_EXE", str(info.executable))
    from juliacall import Main as jl  # noqa: PLC0415 - starts Julia; juliapkg reads our juliapkg.json

    jl.seval("import FluxCompress, Flux")
    _JL = jl
    return jl


def _fc() -> Any:
    return julia().FluxCompress


# ------------------------------------------------------------------------------------------------ conversion
def _np(x: Any) -> np.ndarray:
    """A Julia array (juliacall ArrayValue) as a numpy array without copying."""
    return np.asarray(x)


def to_flux(model: Any) -> Any:
    """A Flux model (juliacall value) with the same layers and the same arrays (shared memory, no copy)."""
    from ..compression.quantize import as_float_layer
    from ..model.activations import Activation
    from ..model.chain import Chain

    fc = _fc()
    if isinstance(model, Chain):
        return fc.chain_of(*[to_flux(layer) for layer in model.layers])
    layer = as_float_layer(model)          # quantized / shared leaves: their float equivalent
    name = getattr(layer, "flux_name", None)
    if isinstance(layer, Activation):
        return fc.activation(layer.name)
    if name == "Dense":
        return fc.dense_layer(layer.weight, layer.bias, layer.activation.name)
    if name in ("Conv", "CrossCor"):
        return fc.conv_layer(layer.weight, layer.bias, layer.activation.name, tuple(layer.stride),
                             tuple(layer.pad), tuple(layer.dilation), int(getattr(layer, "groups", 1)),
                             name == "CrossCor")
    if name in ("MaxPool", "MeanPool"):
        return fc.pool_layer(name, tuple(layer.k), tuple(layer.pad), tuple(layer.stride))
    if name == "GlobalMeanPool":
        return fc.global_mean_pool()
    if name in ("flatten", "Flatten"):
        return fc.activation("flatten")
    if name == "Dropout":
        return fc.dropout_layer(float(layer.p))
    if name == "BatchNorm":
        return fc.batchnorm_layer(layer.beta, layer.gamma, layer.mu, layer.sigma2, float(layer.eps),
                                  float(layer.momentum), layer.activation.name, bool(layer.affine),
                                  bool(layer.track_stats), layer.active, int(layer.chs))
    raise ValueError(f"the julia backend cannot convert layer {model!r} ({type(model).__name__})")


def from_info(info: Sequence[Any]) -> Any:
    """Rebuild a pyflux_compress layer from ``FluxCompress.layer_info`` (arrays shared, not copied)."""
    from ..model import layers as L
    from ..model.activations import get_activation
    from ..model.chain import Chain

    kind = str(info[0])
    if kind == "Chain":
        return Chain(*[from_info(i) for i in info[1]])
    if kind == "Activation":
        return L.flatten if str(info[1]) == "flatten" else get_activation(str(info[1]))
    if kind == "Dense":
        bias = False if info[2] is None else _np(info[2])
        return L.Dense(_np(info[1]), bias, get_activation(str(info[3])))
    if kind in ("Conv", "CrossCor"):
        cls = L.Conv if kind == "Conv" else L.CrossCor
        bias = False if info[2] is None else _np(info[2])
        return cls(_np(info[1]), bias, get_activation(str(info[3])), stride=tuple(info[4]), pad=tuple(info[5]),
                   dilation=tuple(info[6]))
    if kind in ("MaxPool", "MeanPool"):
        return getattr(L, kind)(tuple(info[1]), pad=tuple(info[2]), stride=tuple(info[3]))
    if kind == "GlobalMeanPool":
        return L.GlobalMeanPool()
    if kind == "Dropout":
        return L.Dropout(float(info[1]))
    if kind == "BatchNorm":
        beta, gamma, mu, sigma2, eps, momentum, act, affine, track, active, chs = info[1:]
        bn = L.BatchNorm(int(chs), get_activation(str(act)), eps=float(eps), momentum=float(momentum),
                         affine=bool(affine), track_stats=bool(track), active=active)
        for attr, value in (("beta", beta), ("gamma", gamma), ("mu", mu), ("sigma2", sigma2)):
            if value is not None:
                setattr(bn, attr, _np(value))
        return bn
    raise ValueError(f"the julia backend got an unknown layer kind {kind!r} from FluxCompress")


def from_flux(jmodel: Any, like: Any = None) -> Any:
    """A pyflux_compress Chain from a Flux model; ``like``'s records are carried over."""
    out = from_info(_fc().layer_info(jmodel))
    out.records = [dict(r) for r in getattr(like, "records", [])]
    return out


def batch_to_julia(X: np.ndarray) -> np.ndarray:
    """Batch-first data as Julia's array: the all-axes transpose (a zero-copy view)."""
    return np.asarray(X).transpose()


def _items(pairs: Any) -> list[tuple[str, Any]]:
    """A Julia ``Vector{Pair}`` (juliacall value) as ``[(key, value)]``; Pair fields are ``first``/``second``."""
    return [(str(p.first), p.second) for p in pairs]


def _pairs(mapping: dict) -> tuple:
    """A dict as a tuple of (key, value) tuples: juliacall passes tuples as Julia Tuples (FluxCompress.as_dict)."""
    return tuple((str(k), v) for k, v in mapping.items())


def _layer_masks(model: Any) -> dict[str, np.ndarray]:
    """``{key: keep-mask}`` of the layers' pruning masks (key = path for weights, ``path.bias`` otherwise)."""
    from ..compression._common import leaves

    out = {}
    for path, layer in leaves(model):
        for name, mask in (getattr(layer, "masks", None) or {}).items():
            out[path if name == "weight" else f"{path}.{name}"] = np.asarray(mask, dtype=bool)
    return out


def _set_masks(model: Any, masks: Sequence[tuple[str, Any]]) -> dict[str, float]:
    """Attach ``(key, mask)`` pairs as ``layer.masks``; return ``{key: pruned fraction}``."""
    from ..compression._common import leaves, set_mask

    by_path = dict(leaves(model))
    per_layer = {}
    for key, mask in masks:
        path, name = (key[:-5], "bias") if key.endswith(".bias") else (key, "weight")
        m = _np(mask).astype(bool)
        set_mask(by_path[path], name, m)
        per_layer[key] = float(1.0 - np.count_nonzero(m) / m.size) if m.size else 0.0
    return per_layer


def _include(include: Any) -> Any:
    if include is None:
        return None
    return (include,) if isinstance(include, str) else tuple(str(s) for s in include)


# ------------------------------------------------------------------------------------------------ operations
def sparsity(model: Any, include: Any = None) -> dict:
    r = _fc().sparsity(to_flux(model), include=_include(include))
    return {"total": float(r.total), "per_layer": {k: float(v) for k, v in _items(r.per_layer)}}


def count_params(model: Any, nonzero: bool = True) -> dict:
    r = _fc().count_params(to_flux(model), nonzero=bool(nonzero))
    return {"total": int(r.total), "per_layer": {k: int(v) for k, v in _items(r.per_layer)}}


def prune(model: Any, sparsity: float, scope: str = "layer", include: Any = None) -> Any:
    from ..compression._common import add_record

    jm, jmasks = _fc().prune(to_flux(model), float(sparsity), scope=scope, include=_include(include))
    result = from_flux(jm, model)
    masks = _items(jmasks)
    per_layer = _set_masks(result, masks)
    sizes = {k: _np(m).size for k, m in masks}
    total = sum(per_layer[k] * sizes[k] for k in per_layer) / max(sum(sizes.values()), 1)
    add_record(result, "prune", {"sparsity": float(sparsity), "scope": scope, "include": include}, per_layer,
               total_sparsity=float(total))
    return result


def prune_iteratively(*args: Any, **kwargs: Any) -> Any:
    """The numpy loop (prune, ``pfc.fit``, repeat); each prune inside it is dispatched to Julia."""
    from ..compression.prune import prune_iteratively as public

    return public.__wrapped_numpy__(*args, **kwargs)


def sparsify(model: Any, level: float | None = None, pattern: str | None = None, include: Any = None) -> Any:
    from ..compression._common import add_record

    jm, jmasks = _fc().sparsify(to_flux(model), None if level is None else float(level), pattern=pattern,
                                include=_include(include))
    result = from_flux(jm, model)
    per_layer = _set_masks(result, _items(jmasks))
    add_record(result, "sparsify", {"level": None if pattern is not None else level, "pattern": pattern,
                                    "include": include}, per_layer)
    return result


def prune_structured(model: Any, fraction: float, criterion: str = "l1") -> Any:
    from ..compression._common import add_record, leaves

    jm, kept, skipped = _fc().prune_structured(to_flux(model), float(fraction), criterion=criterion)
    result = from_flux(jm, model)
    keep = {p: (np.asarray(_np(k), dtype=np.int64) - 1) for p, k in _items(kept)}   # 1-based -> 0-based
    units = {p: (layer.weight.shape[0] if layer.weight.ndim == 2 else layer.weight.shape[3])
             for p, layer in leaves(model) if p in keep}
    before = sum(a.size for _, layer in leaves(model) for a in layer.params().values())
    after = sum(a.size for _, layer in leaves(result) for a in layer.params().values())
    add_record(result, "prune_structured", {"fraction": float(fraction), "criterion": criterion},
               {p: float(1.0 - len(k) / units[p]) for p, k in keep.items()},
               kept={p: k.tolist() for p, k in keep.items()}, skipped={p: str(r) for p, r in _items(skipped)},
               params_before=int(before), params_after=int(after))
    return result


def lowrank(model: Any, rank: Any = None, energy: float = 0.95) -> Any:
    from ..compression._common import add_record, leaves

    jrank = _pairs(rank) if isinstance(rank, dict) else rank
    fc = _fc()
    jm, jranks, jskipped = fc.lowrank(to_flux(model), rank=fc.as_dict(jrank) if isinstance(jrank, tuple) else jrank,
                                      energy=float(energy))
    result = from_flux(jm, model)
    ranks, skipped = _items(jranks), _items(jskipped)
    by_path = dict(leaves(model))
    kept = {}
    for p, r in ranks:
        s = np.linalg.svd(by_path[str(p)].weight.astype(np.float64), compute_uv=False)
        kept[str(p)] = float((s[:int(r)] ** 2).sum() / (s ** 2).sum()) if (s ** 2).sum() else 1.0
    before = sum(a.size for _, layer in leaves(model) for a in layer.params().values())
    after = sum(a.size for _, layer in leaves(result) for a in layer.params().values())
    add_record(result, "lowrank", {"rank": rank, "energy": float(energy)}, {str(p): int(r) for p, r in ranks},
               energy_kept=kept, skipped={str(p): str(s) for p, s in skipped}, params_before=int(before),
               params_after=int(after))
    return result


def quantize(model: Any, bits: Any = 8, scheme: str = "symmetric", granularity: str = "per_tensor",
             calibration: Any = None, method: str = "minmax", *, weight_clip: str = "minmax",
             rounding: str = "nearest", bias_correction: bool = False, activations: Any = None, fold: bool = True,
             seed: int = 0) -> Any:
    """Julia computes the integers, scales, zero points and activation parameters; the Python
    ``QuantizedChain`` is assembled with them (its layers' own constructor runs first, then every integer
    array is replaced by Julia's, so the object holds exactly what FluxCompress computed)."""
    from ..compression import quantize as Q

    per_layer, X, _ = Q.validate_quantize(model, bits, scheme, granularity, calibration, method)
    if weight_clip != "minmax" or rounding != "nearest" or bias_correction or method in ("mse", "entropy") \
            or activations not in (None, "static" if X is not None else "float"):
        raise ValueError("the julia backend quantizes with weight_clip='minmax', rounding='nearest', "
                         "bias_correction=False and minmax/percentile static or float activations only; "
                         "use pfc.set_backend('numpy') for the post-training options")
    if fold:
        from ..compression.fold import fold_with_paths
        model, paths = fold_with_paths(model)
        per_layer = {paths[p]: b for p, b in per_layer.items() if p in paths}
    fc = _fc()
    jbits = fc.as_dict(_pairs(per_layer))
    jcal = None if X is None else batch_to_julia(X)
    qc = fc.quantize(to_flux(model), bits=jbits, scheme=scheme, granularity=granularity, calibration=jcal,
                     method=method, masks=fc.as_dict(_pairs(_layer_masks(model))))
    weights = dict(_items(qc.weights))
    acts = dict(_items(qc.activations))
    summary: dict[str, Any] = {}

    def fn(path: str, layer: Any) -> Any:
        b = per_layer.get(path)
        if b is None:
            return layer.copy()
        base = Q.as_float_layer(layer).copy()
        q = Q.quantized_class(base)(base, b, scheme, granularity)
        qw = weights[path]
        q.qweight = _np(qw.q).astype(np.int8)
        q.w_scale = np.asarray(_np(qw.scale), dtype=np.float32).reshape(() if granularity == "per_tensor" else -1)
        q.w_zero_point = np.asarray(_np(qw.zero_point), dtype=np.int32).reshape(q.w_scale.shape)
        if path in acts:
            s, zp, qmin, qmax = acts[path]
            q.act_scale, q.act_zero_point = np.float32(s), np.int32(zp)
            q.act_qmin, q.act_qmax, q.method = int(qmin), int(qmax), method
        inner = q.float_layer.copy()                  # the integer kernel, as QuantizedLayer.requantize builds it
        inner.weight = Q.integer_weight(q.qweight, q.w_zero_point)
        inner.bias = None
        inner.activation = Q.A.identity
        if hasattr(inner, "masks"):
            inner.masks = {}
        q._inner = inner
        summary[path] = {"bits": b, "max_abs_error": float(np.abs(q.weight_dequantized() - base.weight).max()),
                         "act_range": None}
        return q

    out = map_layers(fn, model, as_type=Q.QuantizedChain)
    out.records.append({"method": "quantize",
                        "settings": {"bits": bits if not isinstance(bits, dict) else {str(k): v for k, v in bits.items()},
                                     "scheme": scheme, "granularity": granularity, "calibrated": X is not None,
                                     "method": method if X is not None else None, "backend": "julia"},
                        "per_layer": summary})
    return out


def share_weights(model: Any, bits: Any = 5) -> Any:
    from ..compression import sharing as S
    from ..compression.quantize import as_float_layer, quantized_class, resolve_layer_keys

    weighted = [p for p, l in modules(model) if quantized_class(as_float_layer(l)) is not None]
    if isinstance(bits, dict):
        per = {p: (None if v is None else int(v)) for p, v in resolve_layer_keys(model, bits, "bits", weighted).items()}
    else:
        per = {p: int(bits) for p in weighted}
    fc = _fc()
    _, books = fc.share_weights(to_flux(model), bits=fc.as_dict(_pairs({p: b for p, b in per.items() if b})),
                                masks=fc.as_dict(_pairs(_layer_masks(model))))
    books = {p: tuple(book) for p, book in _items(books)}
    summary: dict[str, Any] = {}

    def fn(path: str, layer: Any) -> Any:
        if path not in books:
            return layer.copy()
        base = as_float_layer(layer).copy()
        c, idx, mask = books[path]
        b = per[path]
        dtype = np.uint8 if b <= 8 else np.uint16
        cls = S.SharedDense if base.weight.ndim == 2 else S.SharedConv
        shared = cls(base, _np(c), _np(idx).astype(dtype), _np(mask).astype(bool), b)
        summary[path] = {"bits": b, "centroids": int(_np(c).size), "nonzero": int(_np(mask).sum()),
                         "iterations": None, "backend": "julia"}
        return shared

    from ..model.chain import Chain

    out = map_layers(fn, model, as_type=Chain)
    out.records.append({"method": "share_weights",
                        "settings": {"bits": bits if not isinstance(bits, dict) else {str(k): v for k, v in bits.items()}},
                        "per_layer": summary})
    return out


def optimiser_rule(opt: Any) -> Any:
    """The Optimisers.jl twin of ``pfc.Adam`` / ``pfc.SGD`` (FluxCompress.optimiser_rule)."""
    from ..train.optimisers import SGD, Adam

    fc = _fc()
    if opt is None:
        opt = Adam(1e-3)
    if isinstance(opt, Adam):
        return fc.optimiser_rule("adam", lr=opt.lr, beta=tuple(opt.beta), eps=opt.eps, weight_decay=opt.weight_decay)
    if isinstance(opt, SGD):
        return fc.optimiser_rule("sgd", lr=opt.lr, momentum=opt.momentum, nesterov=opt.nesterov,
                                 weight_decay=opt.weight_decay)
    raise ValueError(f"the julia backend supports pfc.Adam and pfc.SGD optimisers; got {opt!r}")


def distill(teacher: Any, student: Any, X: Any, y: Any = None, temperature: float = 4.0, alpha: float = 0.9,
            loss: str = "kl", epochs: int = 5, batchsize: int = 128, opt: Any = None, *, seed: int = 0,
            progress: bool = True) -> Any:
    """Same batches as the numpy backend: ``default_rng(seed).permutation(N)`` per epoch, cut into
    ``batchsize`` chunks (exact for students without Dropout, whose rng draws interleave on numpy)."""
    from ..compression._common import add_record
    from ..compression.distill import validate_distill

    a = validate_distill(teacher, student, X, y, temperature, alpha, loss, epochs, batchsize, opt, seed, progress)
    Xv, n, bs = a["X"], len(a["X"]), a["batchsize"]
    rng = np.random.default_rng(a["seed"])
    batches = []
    for _ in range(a["epochs"]):
        order = rng.permutation(n) + 1                              # 1-based for Julia
        batches.append(tuple(order[i:i + bs] for i in range(0, n, bs)))
    fc = _fc()
    teachers = [to_flux(t) for t in a["teachers"]]
    jl = julia()
    jteachers = jl.seval("ts -> collect(Any, ts)")(tuple(teachers))
    yj = None if a["y"] is None else (a["y"] + 1)
    trained, losses = fc.distill(jteachers, to_flux(student), batch_to_julia(Xv), yj,
                                 temperature=float(a["temperature"]), alpha=float(a["alpha"]), loss=a["loss"],
                                 epochs=a["epochs"], batchsize=bs, opt=optimiser_rule(a["opt"]),
                                 batches=tuple(batches), masks=fc.as_dict(_pairs(_layer_masks(student))))
    result = from_flux(trained, student)
    # the student's pruning masks carry over (the trained weights keep their zeros)
    masks = _layer_masks(student)
    if masks:
        _set_masks(result, tuple(masks.items()))
    add_record(result, "distill",
               {"temperature": a["temperature"], "alpha": a["alpha"], "loss": a["loss"], "epochs": a["epochs"],
                "batchsize": bs, "opt": repr(a["opt"]), "seed": a["seed"], "teachers": len(a["teachers"]),
                "labels": a["y"] is not None, "samples": n, "backend": "julia"},
               {}, history=[float(v) for v in losses])
    return result


def _numpy_twin(module: str, name: str):
    def run(*args: Any, **kwargs: Any) -> Any:
        import importlib

        public = getattr(importlib.import_module(module, __package__), name)
        return public.__wrapped_numpy__(*args, **kwargs)

    run.__name__ = name
    run.__doc__ = (f"``{name}`` on the julia backend: defined in Python (a storage format, or an evaluation loop "
                   "around other operations), so this runs the numpy implementation; dispatched operations "
                   "inside it (prune, quantize, ...) still go to Julia.")
    return run


save_compressed = _numpy_twin("..compression.archive", "save_compressed")
load_compressed = _numpy_twin("..compression.archive", "load_compressed")
size_report = _numpy_twin("..compression.archive", "size_report")
sensitivity = _numpy_twin("..compression.sensitivity", "sensitivity")
