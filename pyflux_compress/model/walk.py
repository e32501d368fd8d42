"""The one traversal of a model, in the spirit of ``Flux.modules`` / ``Functors.fmap``.

Every layer has ``children()`` (ordered ``{path fragment: child}``, empty for a leaf) and
``with_children(children)``; containers (``container = True``: Chain, ...) are walked, everything else is a leaf.

Paths are Julia property access relative to the model, 1-based as Julia users read them:
``layers[3].layers[1]`` is ``model.layers[3].layers[1]`` in Julia. The root itself is called ``"model"``
(a bare Dense passed as the model is ``"model"``), never ``""``. Records, error messages, ``include=``
selectors, reports and the CLI all use these paths.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator

__all__ = ["modules", "map_layers", "ROOT", "join", "first_weight"]

ROOT = "model"


def join(path: str, fragment: str) -> str:
    """The path of child ``fragment`` of the node at ``path`` (children of the root drop the ``model.``)."""
    return fragment if path == ROOT else f"{path}.{fragment}"


def modules(model: Any, *, containers: bool = False, path: str = ROOT) -> Iterator[tuple[str, Any]]:
    """Yield ``(path, layer)`` for every leaf layer in order (depth first, children in order).

    ``containers=True`` also yields each container before its children (the root as ``"model"``).
    """
    if not getattr(model, "container", False):
        yield path, model
        return
    if containers:
        yield path, model
    for fragment, child in model.children().items():
        yield from modules(child, containers=containers, path=join(path, fragment))


def map_layers(f: Callable[[str, Any], Any], model: Any, *, as_type: type | None = None,
               path: str = ROOT) -> Any:
    """A new model with every leaf replaced by ``f(path, leaf)``; containers are rebuilt with
    ``with_children`` (they keep their own attributes, e.g. ``records``). ``as_type``: rebuild the root
    container as this class instead (e.g. a ``QuantizedChain`` from a ``Chain``)."""
    if not getattr(model, "container", False):
        return f(path, model)
    new = {k: map_layers(f, c, path=join(path, k)) for k, c in model.children().items()}
    return model.with_children(new, as_type=as_type) if as_type is not None else model.with_children(new)


def first_weight(model: Any) -> tuple[Any, int, int] | None:
    """``(leaf, input channels, weight ndim)`` of the model's first weight layer, read from its declared
    ``in_axes["weight"]`` (quantized/shared wrappers: their ``float_layer``); parameter-free channel-wise leaves
    before it (activations, pooling, dropout) are skipped. None when the first other leaf has no such weight."""
    for _, leaf in modules(model):
        layer = getattr(leaf, "float_layer", leaf)
        w = getattr(layer, "weight", None)
        if w is None and not layer.params() and getattr(layer, "structured", None) == "channelwise":
            continue
        axis = getattr(layer, "in_axes", {}).get("weight")
        return None if w is None or axis is None else (leaf, int(w.shape[axis]), w.ndim)
    return None
