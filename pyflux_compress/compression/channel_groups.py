"""Which channels structured pruning must remove together: a dependency-group planner (like torch-pruning's
DepGraph), traced through Chains, ``SkipConnection`` and ``Parallel``.

The model is traced once, symbolically. Every channel of every tensor is an *element*; a layer declaring the
structured role ``"units"`` (Dense, Conv, ConvTranspose: ``out_axes`` / ``in_axes`` say which kernel axes) creates
fresh elements for its output channels and reads its input channels; a ``"channelwise"`` layer (activations,
pooling, BatchNorm, a depthwise Conv with one filter per channel) passes its input elements through, slicing its
own per-channel arrays; ``"flatten"`` turns channel ``c`` of ``(N, C, H, W)`` into the block of ``H*W``
consecutive features ``c*H*W : (c+1)*H*W`` (C-order flatten of NCHW = Flux's column-major flatten of WHCN).
Containers declare how data flows through them (``structured``): ``"sequential"`` (Chain), ``"skip"``
(``SkipConnection``: ``connection(layer(x), x)``), ``"parallel"`` (``Parallel``: ``connection(f1(x), f2(x), ...)``).
Their connection couples channels:

* ``+`` merges the elements position by position (union-find): channel ``i`` of every summand is the same
  channel, so a residual block's last conv, the producer of the skipped input and every consumer of the sum are
  pruned together;
* ``cat`` along the channel axis lays the branches' elements side by side (channel offsets), so each branch
  keeps its own coupling and the consumer of the concatenation loses exactly the removed branch channels;
  ``cat`` along another axis couples like ``+``.

A *group* is a connected set of elements (one channel that exists in several places); a *family* is the set of
groups made by the same producers (all channels of one residual stream, or of one plain layer). Each family loses
``round(fraction * size)`` groups, ranked by the importance of the group: the norm of all its producers' incoming
weights together. Elements that must stay are *fixed*, with the reason: channels of the model's input and
output, channels read by a layer structured pruning cannot see through (role None: LayerNorm, attention,
recurrent layers, a grouped convolution whose channels are tied to its groups, a Dense reading a 4-D tensor
without a flatten, ...), and anything added to or concatenated with such channels. A layer with the role
``"grouped"`` (GroupNorm) is channel-wise but records its ``channel_blocks()`` contiguous blocks: the caller cuts
them evenly.

Everything is read from the layers' declarations; no class name is tested here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..model.walk import ROOT, join

__all__ = ["ChannelGraph", "trace_channels", "grouped_channels"]


@dataclass
class Flow:
    """A traced tensor: one element id per channel (None: not tracked, e.g. the model's input), its rank when
    known, and ``flat`` when it is a flatten of those channels (each covers a block of features, size unknown
    until a consumer reads it)."""

    elems: list[int] | None
    ndim: int | None = None
    flat: bool = False


@dataclass
class Slot:
    """A place where channels are cut: ``kind`` "out" (a producer's outputs), "channelwise" (per-channel arrays),
    "in" (a consumer's inputs); ``elems`` holds the element of every sliced index."""

    kind: str
    path: str
    layer: Any
    elems: list[int]


@dataclass
class ChannelGraph:
    """The result of :func:`trace_channels`: slots to cut and the union-find of elements."""

    parent: list[int] = field(default_factory=list)
    fixed: dict[int, str] = field(default_factory=dict)      # root -> why its channel must stay
    slots: list[Slot] = field(default_factory=list)
    #: channel-block constraints (GroupNorm): (path, elements in channel order, number of contiguous blocks)
    blocks: list[tuple[str, list[int], int]] = field(default_factory=list)

    # ---- union-find ----------------------------------------------------------------------------------
    def new(self, n: int, fixed: str | None = None) -> list[int]:
        ids = list(range(len(self.parent), len(self.parent) + n))
        self.parent.extend(ids)
        if fixed:
            for i in ids:
                self.fixed[i] = fixed
        return ids

    def find(self, e: int) -> int:
        root = e
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[e] != root:                      # path compression
            self.parent[e], e = root, self.parent[e]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        self.parent[rb] = ra
        why = self.fixed.pop(rb, None)
        if why is not None:
            self.fixed.setdefault(ra, why)

    def fix(self, flow: Flow, reason: str) -> None:
        for e in flow.elems or ():
            self.fixed.setdefault(self.find(e), reason)

    def reason(self, e: int) -> str | None:
        return self.fixed.get(self.find(e))


def _groups(layer: Any) -> int:
    return int(getattr(layer, "groups", 1) or 1)


def _depthwise(layer: Any) -> bool:
    """One filter per channel (``DepthwiseConv(k, c => c)``): input and output channel axes of the kernel, as the
    layer declares them, hold 1 and ``groups`` entries. Such a layer keeps channels apart: channel-wise."""
    w = getattr(layer, "weight", None)
    g = _groups(layer)
    ia, oa = layer.in_axes.get("weight"), layer.out_axes.get("weight")
    return g > 1 and isinstance(w, np.ndarray) and ia is not None and oa is not None and w.shape[ia] == 1 \
        and w.shape[oa] == g


class _Tracer:
    def __init__(self) -> None:
        self.g = ChannelGraph()

    def name(self, path: str, layer: Any) -> str:
        return f"{path} ({getattr(layer, 'flux_name', type(layer).__name__)})"

    def positions(self, flow: Flow, n: int, path: str, layer: Any) -> list[int] | None:
        """The element of each of ``n`` channel positions a layer reads from ``flow`` (a flatten's blocks
        expanded); None (and the elements fixed) when they do not line up."""
        if flow.elems is None:
            return None
        c = len(flow.elems)
        if flow.flat:
            block, rem = divmod(n, c) if c else (0, 1)
            if rem or block == 0:
                self.g.fix(flow, f"{self.name(path, layer)} reads {n} features, not a multiple of the {c} "
                                 "flattened channels")
                return None
            return [e for e in flow.elems for _ in range(block)]
        if n != c:
            self.g.fix(flow, f"{self.name(path, layer)} reads {n} channels where {c} arrive")
            return None
        return list(flow.elems)

    def opaque(self, path: str, layer: Any, flow: Flow, why: str | None = None) -> Flow:
        self.g.fix(flow, why or f"read by {self.name(path, layer)}, which structured pruning cannot see through")
        return Flow(None)

    # ---- containers -----------------------------------------------------------------------------------
    def trace(self, node: Any, path: str, flow: Flow) -> Flow:
        if not getattr(node, "container", False):
            return self.leaf(node, path, flow)
        role = getattr(node, "structured", None)
        kids = [(join(path, frag), child) for frag, child in node.children().items()]
        if role == "sequential":
            for sub, child in kids:
                flow = self.trace(child, sub, flow)
            return flow
        if role == "skip":                       # connection(layers(x), x)
            return self.connect(node, path, [self.trace(kids[0][1], kids[0][0], flow), flow])
        if role == "parallel":                   # connection(f1(x), f2(x), ...)
            return self.connect(node, path, [self.trace(child, sub, flow) for sub, child in kids])
        return self.opaque(path, node, flow)

    def connect(self, node: Any, path: str, flows: list[Flow]) -> Flow:
        conn = node.connection
        if len(flows) == 1:
            return flows[0]
        why = (f"combined by {self.name(path, node)} with channels that must stay "
               f"(connection {conn!r}); kept as a coupled whole")
        known = [f for f in flows if f.elems is not None and not f.flat]
        ndims = {f.ndim for f in flows}
        if len(known) < len(flows) or (conn.kind == "cat" and not ndims <= {2, 4}):   # 3-D: features are last
            for f in flows:
                self.g.fix(f, why)
            return Flow(None)
        if conn.kind == "cat" and len(ndims) == 1 and None not in ndims and conn.dims < flows[0].ndim \
                and conn.axis(flows[0].ndim) == 1:   # channels laid side by side (offsets)
            return Flow([e for f in flows for e in f.elems], flows[0].ndim)
        # "+" (or cat along a non-channel axis): channel i of every input is one channel
        if any(len(f.elems) != len(flows[0].elems) for f in flows):
            for f in flows:
                self.g.fix(f, f"{self.name(path, node)} combines {[len(f.elems) for f in flows]} channels "
                              "(broadcast)")
            return Flow(None)
        for f in flows[1:]:
            for a, b in zip(flows[0].elems, f.elems):
                self.g.union(a, b)
        return Flow(list(flows[0].elems), next(iter(ndims)) if len(ndims) == 1 else None)

    # ---- leaves ---------------------------------------------------------------------------------------
    def leaf(self, layer: Any, path: str, flow: Flow) -> Flow:
        role = getattr(layer, "structured", None)
        if role == "units" and _depthwise(layer):
            role = "channelwise"
        if role == "units":
            return self.units(layer, path, flow)
        if role == "flatten":
            if flow.elems is None or flow.flat or flow.ndim == 2:
                return Flow(flow.elems, 2, flow.flat)
            return Flow(flow.elems, 2, True)
        if role == "grouped":              # channel-wise, but cut evenly across its contiguous channel blocks
            out = self.channelwise(layer, path, flow, sliced=True)
            if out.elems is not None and len(out.elems) % layer.channel_blocks() == 0:
                self.g.blocks.append((path, list(out.elems), layer.channel_blocks()))
            else:
                self.g.fix(out, f"{self.name(path, layer)}: channels do not split into its groups")
            return out
        if role == "channelwise":
            return self.channelwise(layer, path, flow)
        return self.opaque(path, layer, flow)

    def channelwise(self, layer: Any, path: str, flow: Flow, sliced: bool = False) -> Flow:
        """A layer that keeps channels apart: its per-channel arrays (``out_axes``) are sliced with them
        (``sliced``: its ``slice_outputs`` runs even without such arrays, e.g. to update a channel count)."""
        axes = getattr(layer, "out_axes", {})
        name = next((n for n in axes if isinstance(getattr(layer, n, None), np.ndarray)), None)
        if name is None:
            if getattr(layer, "params", dict)():   # arrays whose channel axis is not declared (Scale: trailing axes)
                return self.opaque(path, layer, flow)
            if not sliced or flow.elems is None or flow.flat:
                return flow
            pos = list(flow.elems)
        elif flow.ndim not in (None, 2, 4):    # (N, len, features): per-channel arrays read axis 1, not features
            return self.opaque(path, layer, flow)
        else:
            pos = self.positions(flow, int(getattr(layer, name).shape[axes[name]]), path, layer)
        if pos is None:
            return Flow(None) if flow.elems is None else flow
        self.g.slots.append(Slot("channelwise", path, layer, pos))
        return Flow(pos, flow.ndim)

    def units(self, layer: Any, path: str, flow: Flow) -> Flow:
        w = layer.weight
        n_in, n_out = int(w.shape[layer.in_axes["weight"]]), int(w.shape[layer.out_axes["weight"]])
        conv = w.ndim > 2
        out_ndim = w.ndim if conv else (flow.ndim if flow.ndim and flow.ndim != 4 else 2)
        if _groups(layer) > 1:
            self.opaque(path, layer, flow, f"feeds the grouped convolution {path}: its channels are tied to the "
                                            "groups")
            out = self.g.new(int(getattr(layer, "out_channels", n_out)), fixed="grouped convolution")
            self.g.slots.append(Slot("out", path, layer, out))
            return Flow(out, out_ndim)
        if flow.elems is not None:
            if conv and (flow.flat or flow.ndim == 2):
                self.g.fix(flow, f"flatten between {self.name(path, layer)} and the layer before it")
            elif not conv and flow.ndim == 4 and not flow.flat:
                self.g.fix(flow, f"a 4-D output reaches {self.name(path, layer)} without a flatten")
            else:
                pos = self.positions(flow, n_in, path, layer)
                if pos is not None:
                    self.g.slots.append(Slot("in", path, layer, pos))
        out = self.g.new(n_out)
        self.g.slots.append(Slot("out", path, layer, out))
        return Flow(out, out_ndim)


def trace_channels(model: Any) -> ChannelGraph:
    """Trace ``model`` (a Chain or a layer) symbolically; the model's output channels are fixed."""
    t = _Tracer()
    out = t.trace(model, ROOT, Flow(None))
    t.g.fix(out, "its outputs are the model's outputs")
    return t.g


def grouped_channels(graph: ChannelGraph) -> tuple[list[list[int]], dict[int, str]]:
    """``(families, fixed)``: every family is a list of group roots (ordered by first appearance in a producer's
    outputs); ``fixed`` maps the first root of each family that must stay whole to the reason."""
    producers: dict[int, set[int]] = {}                 # root -> indices of the "out" slots holding it
    order: list[int] = []
    for k, slot in enumerate(graph.slots):
        if slot.kind != "out":
            continue
        for e in slot.elems:
            r = graph.find(e)
            if r not in producers:
                producers[r] = set()
                order.append(r)
            producers[r].add(k)
    by_signature: dict[frozenset, list[int]] = {}
    for r in order:
        by_signature.setdefault(frozenset(producers[r]), []).append(r)
    families = list(by_signature.values())
    fixed = {}
    for fam in families:
        why = next((graph.fixed[r] for r in fam if r in graph.fixed), None)
        if why is not None:
            fixed[fam[0]] = why
    return families, fixed
