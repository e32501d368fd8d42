"""Flux ``Conv`` (a true convolution: NNlib flips the kernel) and ``CrossCor`` (no flip); ONNX ``Conv``.

Layout (Flux -> ONNX, proved numerically in tests/test_onnx_export.py): ONNX ``Conv`` is a cross-correlation,
so ``W_onnx = flip(w, axes=(0, 1)).transpose(3, 2, 1, 0)``: Flux ``(kw, kh, cin, cout)`` -> ONNX
``(cout, cin, kh, kw)``; ``CrossCor`` skips the flip. Flux tuples list the first spatial dim first, which is the
*last* numpy axis (W).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..._validate import check_int, check_rng, check_tuple
from .. import _conv
from ..activations import Activation, get_activation, identity
from ..registry import register_layer
from ..syntax import Pair, SamePad, as_int, as_ints, as_pad, as_pair
from .base import Grads, Layer, activation_of, as_data, bias_array, init_fn, tuple_str

def conv_pad(pad: Any, k: tuple[int, int], dilation: tuple[int, int], who: str) -> tuple[int, int, int, int]:
    """Flux pad forms -> (w_lo, w_hi, h_lo, h_hi): int, (pw, ph), 4-tuple, "same"/SamePad()."""
    if isinstance(pad, SamePad) or (isinstance(pad, str) and pad.lower() == "same"):
        return _conv.same_pad(k, dilation)  # type: ignore[return-value]
    if isinstance(pad, (tuple, list)) and len(pad) == 2:
        pw, ph = check_tuple(f"{who} pad", pad, 2, min=0)
        return (pw, pw, ph, ph)  # NNlib: one entry per spatial dim means symmetric padding
    if isinstance(pad, (tuple, list)):
        return check_tuple(f"{who} pad", pad, 4, min=0)  # type: ignore[return-value]
    if isinstance(pad, str):
        raise ValueError(f"{who}: pad must be an int, a 2- or 4-tuple, 'same' or SamePad(); got {pad!r}")
    return check_tuple(f"{who} pad", pad, 4, min=0)  # type: ignore[return-value]


class SpatialConv(Layer):
    """What :class:`Conv` (and CrossCor) and :class:`ConvTranspose` share: a ``(kw, kh, ·, ·)`` kernel with a
    bias and σ, the engine's forward/backward around one pair of ``model/_conv.py`` kernels, the per-sample
    size checks and Flux's ``show``. Not registered: a subclass names its kernels and its output size (and
    declares its own ``batch_mode``, which by design no subclass inherits)."""

    compressible = ("weight",)
    structured = "units"
    input_grad_optional = True

    @property
    def k(self) -> tuple[int, int]:
        return (int(self.weight.shape[0]), int(self.weight.shape[1]))

    def params(self) -> dict[str, np.ndarray]:
        return {"weight": self.weight} if self.bias is None else {"weight": self.weight, "bias": self.bias}

    # ---- what a subclass says ------------------------------------------------------------------------
    def conv_forward(self, x: np.ndarray) -> tuple[np.ndarray, Any]:
        """``(z, kernel cache)``: the pre-activation output ``(N, cout, Ho, Wo)`` of input ``(N, cin, H, W)``."""
        raise NotImplementedError

    def conv_backward(self, ccache: Any, dz: np.ndarray, need_dx: bool) -> tuple:
        """``(dx or None, dweight, dbias or None)`` from the pre-activation gradient ``dz``."""
        raise NotImplementedError

    def spatial_size(self, h: int, w: int) -> tuple[int, int]:
        """Output ``(Ho, Wo)`` of an ``h`` x ``w`` input (may be < 1: the caller reports it)."""
        raise NotImplementedError

    empty_output = "is smaller than its (dilated) kernel"

    # ---- engine --------------------------------------------------------------------------------------
    def forward(self, x: Any, train: bool = False, rng: Any = None) -> tuple[np.ndarray, Any]:
        x = as_data(x, self.weight.dtype, self)
        if x.ndim != 4:
            raise self._err(f"expects input of shape (N, C, H, W); got {x.shape}")
        self.output_shape(x.shape[1:])
        z, ccache = self.conv_forward(x)
        y = self.activation._fn(z) if self.activation is not identity else z
        return y, (ccache, z, y)

    def backward(self, cache: Any, dy: np.ndarray, need_input_grad: bool = True
                 ) -> tuple[np.ndarray | None, Grads]:
        """``need_input_grad=False`` skips ``dx`` (returned as None): a model's first layer never needs it."""
        ccache, z, y = cache
        dz = self.activation.grad(z, y, dy) if self.activation is not identity else dy
        dx, dw, db = self.conv_backward(ccache, dz, need_input_grad)
        grads = {"weight": dw}
        if db is not None:
            grads["bias"] = db
        return dx, grads

    def output_shape(self, in_shape: tuple) -> tuple:
        in_shape = tuple(in_shape)
        if len(in_shape) != 3:
            raise self._err(f"expects per-sample input (C, H, W); got {in_shape}")
        c, h, w = in_shape
        if c != self.in_channels:
            raise self._err(f"expects {self.in_channels} input channels, got {c}")
        ho, wo = self.spatial_size(h, w)
        if ho < 1 or wo < 1:
            raise self._err(f"input {h}x{w} (HxW) {self.empty_output} (output {ho}x{wo})")
        return (self.out_channels, ho, wo)

    def __repr__(self) -> str:
        return conv_repr(self)


@register_layer
class Conv(SpatialConv):
    """2-D convolution with Flux's semantics: a *true* convolution (NNlib flips the kernel).

    ``Conv((kw, kh), (cin, cout), σ; stride=1, pad=0, dilation=1, bias=True)`` (Python for
    ``Conv((3, 3), 1 => 8, relu)``), also ``Conv((3, 3), 1, 8, relu)`` and Flux's ``Conv(weight, bias, σ)``.
    Input ``(N, cin, H, W)``, output ``(N, cout, Ho, Wo)``. Tuples are in Flux order (W first):
    ``stride (sw, sh)``, ``dilation (dw, dh)``, ``pad (w_lo, w_hi, h_lo, h_hi)``; ``pad`` also accepts an int,
    ``(pw, ph)``, ``"same"`` or ``SamePad()``.

    ``groups=g`` (Flux 0.13+): input and output channels split into g blocks, block j of the output sees only
    block j of the input; the kernel is ``(kw, kh, cin/g, cout)`` (Flux's ``convfilter(k, cin => cout;
    groups)``). ``DepthwiseConv(k, cin => cout)`` is Flux's shorthand for ``groups = cin`` (Flux returns a Conv
    and prints it as ``Conv(..., groups=cin)``). ONNX ``Conv`` with ``group``.
    """

    flux_name = "Conv"
    batch_mode = "independent"
    flux_fields = {"σ": "activation", "weight": "weight", "bias": "bias", "stride": "stride", "pad": "pad",
                   "dilation": "dilation", "groups": "groups"}
    flux_activation_param = 2
    flux_aliases: tuple[str, ...] = ("DepthwiseConv",)
    onnx_ops = ("Conv",)
    out_axes = {"weight": 3, "bias": 0}
    in_axes = {"weight": 2}
    flipped = True

    def __init__(self, k: Any, ch: Any = None, *rest: Any, stride: Any = 1, pad: Any = 0, dilation: Any = 1,
                 groups: int = 1, bias: Any = True, init: Callable | None = None,
                 rng: np.random.Generator | None = None, seed: int | None = None,
                 activation: Any = None) -> None:
        who = self.flux_name
        rest = list(rest)
        if isinstance(k, np.ndarray):  # Flux's Conv(weight, bias, σ; ...)
            weight = k
            if weight.ndim != 4:
                raise ValueError(f"{who}: weight must have shape (kw, kh, cin, cout); got {weight.shape}")
            if weight.dtype.kind != "f":
                weight = weight.astype(np.float32)
            if ch is not None and not isinstance(ch, (Activation, str)):
                bias = ch
            elif ch is not None:
                rest.insert(0, ch)
            act = rest.pop(0) if rest else activation
            if rest:
                raise ValueError(f"{who}: too many positional arguments")
            self.weight = weight
            kk = weight.shape[:2]
        else:
            kk = check_tuple(f"{who} kernel size k", tuple(k) if isinstance(k, list) else k, 2, min=1)
            if isinstance(ch, (tuple, list)):  # Conv(k, (cin, cout), σ)
                if len(ch) != 2:
                    raise ValueError(f"{who}: channels must be (cin, cout); got {ch!r}")
                cin, cout = ch
            else:  # Conv(k, cin, cout, σ)
                if not rest:
                    raise ValueError(f"{who}: give channels as (cin, cout) or cin, cout; got only {ch!r}")
                cin, cout = ch, rest.pop(0)
            act = rest.pop(0) if rest else activation
            if rest:
                raise ValueError(f"{who}: too many positional arguments")
            cin = check_int(f"{who} cin", cin, min=1)
            cout = check_int(f"{who} cout", cout, min=1)
            gen = check_rng(seed, rng)
            groups = check_int(f"{who} groups", groups, min=1)
            if cin % groups or cout % groups:
                raise ValueError(f"{who}: cin={cin} and cout={cout} must both be divisible by groups={groups}")
            self.weight = np.asarray(init_fn(init)(gen, kk[0], kk[1], cin // groups, cout), dtype=np.float32)
        self.groups = check_int(f"{who} groups", groups, min=1)
        if self.weight.shape[3] % self.groups:
            raise ValueError(f"{who}: output channels {self.weight.shape[3]} not divisible by groups={self.groups}")
        self.activation: Activation = get_activation(act)
        self.bias = bias_array(bias, self.weight.shape[3], self.weight.dtype, who)
        self.stride = check_tuple(f"{who} stride", stride, 2, min=1)
        self.dilation = check_tuple(f"{who} dilation", dilation, 2, min=1)
        self.pad = conv_pad(pad, tuple(kk), self.dilation, who)

    def slice_outputs(self, keep: np.ndarray) -> None:
        """Keep output channels ``keep``; a depthwise conv (one filter per group) keeps its groups with them."""
        depthwise = self.groups > 1 and self.weight.shape[2] == 1 and self.weight.shape[3] == self.groups
        super().slice_outputs(keep)
        if depthwise:
            self.groups = len(keep)

    @property
    def in_channels(self) -> int:
        return int(self.weight.shape[2]) * self.groups

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[3])

    def conv_forward(self, x: np.ndarray) -> tuple[np.ndarray, Any]:
        return _conv.conv2d_forward(x, self.weight, self.bias, self.stride, self.pad, self.dilation,
                                    flip=self.flipped, groups=self.groups)

    def conv_backward(self, ccache: Any, dz: np.ndarray, need_dx: bool) -> tuple:
        return _conv.conv2d_backward(ccache, dz, need_dx=need_dx)

    def spatial_size(self, h: int, w: int) -> tuple[int, int]:
        kw, kh = self.k
        return (_conv.out_size(h, kh, self.stride[1], self.pad[2], self.pad[3], self.dilation[1]),
                _conv.out_size(w, kw, self.stride[0], self.pad[0], self.pad[1], self.dilation[0]))


    @classmethod
    def from_syntax(cls, call: Any) -> "Conv":
        call.check_kw("stride", "pad", "dilation", "groups", "bias", "init")
        call.no_init()
        args, name = call.args, cls.flux_name
        if len(args) < 2:
            raise ValueError(f"expected {name}((kw, kh), cin => cout[, σ])")
        if isinstance(args[1], Pair):
            ch, rest = as_pair(args[1], "channels"), args[2:]
        else:
            ch, rest = (as_int(args[1], "cin"), as_int(args[2] if len(args) > 2 else None, "cout")), args[3:]
        if len(rest) > 1:
            raise ValueError("too many positional arguments")
        kw = {key: (as_pad(v) if key == "pad" else as_ints(v, key)) for key, v in call.kwargs.items()
              if key in ("stride", "pad", "dilation", "groups")}
        if call.name == "DepthwiseConv":              # Flux: Conv(k, ch, σ; groups = ch.first, ...)
            if "groups" in kw:
                raise ValueError("DepthwiseConv sets groups = cin; use Conv(...; groups=g) for other groups")
            kw["groups"] = ch[0]
        return cls(as_ints(args[0], "kernel size"), ch, call.activation(rest[0]) if rest else None,
                   bias=call.bool("bias", True), init=call.init, rng=call.rng, **kw)

    @classmethod
    def from_flux(cls, fields: dict[str, Any], build: Callable) -> "Conv":
        w = fields.get("weight")
        if not isinstance(w, np.ndarray) or w.ndim != 4:
            raise ValueError(f"{cls.flux_name} weight must be a 4-D (kw, kh, cin, cout) array")
        groups = int(fields.get("groups", 1))
        return cls(tuple(w.shape[:2]), (w.shape[2] * groups, w.shape[3]), activation_of(fields.get("σ")),
                   groups=groups,
                   stride=tuple(fields["stride"]), pad=tuple(fields["pad"]), dilation=tuple(fields["dilation"]),
                   bias=fields.get("bias") is not False, init=lambda rng, *dims: np.zeros(dims, np.float32))

    def to_onnx(self, g: Any, x: str, weight: np.ndarray | None = None) -> str:
        """ONNX ``Conv`` is a cross-correlation: Conv's kernel is flipped, then permuted to (cout, cin, kh, kw)."""
        w = np.asarray(self.weight if weight is None else weight, dtype=np.float32)
        p = g.fresh("conv")
        inputs = [x, g.const(f"{p}_W", flux_conv_to_onnx(w, self.flipped), allow_sparse=True)]
        if self.bias is not None:
            inputs.append(g.const(f"{p}_b", np.asarray(self.bias, np.float32)))
        (y,) = g.node("Conv", inputs, prefix=p, group=self.groups, **spatial_attrs(self, w.shape[:2]))
        return self.activation.to_onnx(g, y)

    @classmethod
    def from_onnx(cls, node: Any, r: Any) -> "Conv":
        attrs = r.attrs(node)
        w = r.const(node, 1).astype(np.float32)
        if w.ndim != 4:
            raise r.error(node, f"only 2-D Conv imports (weight ndim {w.ndim})")
        if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            raise r.error(node, "auto_pad is not supported; export with explicit pads")
        bias = r.const(node, 2).astype(np.float32).reshape(-1) if r.has_input(node, 2) else False
        # Flux Conv flips, so flip back what ONNX correlates with
        return cls(onnx_conv_to_flux(w, flipped=True), bias, groups=int(attrs.get("group", 1)),
                   **spatial_from_onnx(attrs))


@register_layer
class CrossCor(Conv):
    """Like :class:`Conv` but a cross-correlation (kernel not flipped), as Flux's ``CrossCor``."""

    flux_name = "CrossCor"
    batch_mode = "independent"
    flux_fields = {"σ": "activation", "weight": "weight", "bias": "bias", "stride": "stride", "pad": "pad",
                   "dilation": "dilation"}
    flux_aliases: tuple[str, ...] = ()
    onnx_ops = ()  # ONNX Conv imports as Conv (kernel flipped back)
    flipped = False

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        if self.groups != 1:                       # Flux's CrossCor struct has no groups field
            raise ValueError(f"CrossCor has no groups (Flux's CrossCor struct lacks the field); "
                             f"got groups={self.groups}")


def conv_repr(layer: Any) -> str:
    """Flux's ``show`` of a convolution (``_print_conv_opt``): ``Conv((3, 3), 1 => 8, relu, pad=1, stride=2)``;
    also ConvTranspose (its ``outpad``) — the options Flux prints, in Flux's order, defaults left out."""
    s = f"{layer.flux_name}({layer.k}, {layer.in_channels} => {layer.out_channels}"
    if layer.activation is not identity:
        s += f", {layer.activation!r}"
    opts = [("pad", layer.pad, 0), ("outpad", getattr(layer, "outpad", (0,)), 0), ("stride", layer.stride, 1),
            ("dilation", layer.dilation, 1)]
    s += "".join(f", {key}={tuple_str(v)}" for key, v, default in opts if any(x != default for x in v))
    if getattr(layer, "groups", 1) != 1:
        s += f", groups={layer.groups}"
    return s + (", bias=false)" if layer.bias is None else ")")


def flux_conv_to_onnx(weight: np.ndarray, flipped: bool) -> np.ndarray:
    """Flux kernel ``(kw, kh, cin, cout)`` -> ONNX ``(cout, cin, kh, kw)``; ``flipped`` for true convolution."""
    w = np.asarray(weight)
    if flipped:
        w = w[::-1, ::-1]
    return np.ascontiguousarray(w.transpose(3, 2, 1, 0))


def onnx_conv_to_flux(weight: np.ndarray, flipped: bool) -> np.ndarray:
    """Inverse of :func:`flux_conv_to_onnx`."""
    w = np.asarray(weight).transpose(3, 2, 1, 0)
    if flipped:
        w = w[::-1, ::-1]
    return np.ascontiguousarray(w)


def spatial_attrs(layer: Any, kernel: tuple | None = None) -> dict[str, list[int]]:
    """ONNX ``kernel_shape/strides/pads[/dilations]`` ([H, W] order) from Flux's (W-first) tuples:
    ``stride (sw, sh)`` -> ``[sh, sw]``, ``pad (w_lo, w_hi, h_lo, h_hi)`` -> ``[h_lo, w_lo, h_hi, w_hi]``."""
    (kw, kh), (sw, sh), (w_lo, w_hi, h_lo, h_hi) = kernel or layer.k, layer.stride, layer.pad
    attrs = {"kernel_shape": [int(kh), int(kw)], "strides": [int(sh), int(sw)],
             "pads": [int(h_lo), int(w_lo), int(h_hi), int(w_hi)]}
    if hasattr(layer, "dilation"):
        attrs["dilations"] = [int(layer.dilation[1]), int(layer.dilation[0])]
    return attrs


def spatial_from_onnx(attrs: dict) -> dict[str, Any]:
    """ONNX [H, W]-ordered attributes -> Flux's W-first ``stride``, ``pad`` and (conv) ``dilation``."""
    sh, sw = attrs.get("strides", [1, 1])
    h_lo, w_lo, h_hi, w_hi = attrs.get("pads", [0, 0, 0, 0])
    out: dict[str, Any] = {"stride": (int(sw), int(sh)), "pad": (int(w_lo), int(w_hi), int(h_lo), int(h_hi))}
    if "dilations" in attrs or "kernel_shape" in attrs:
        dh, dw = attrs.get("dilations", [1, 1])
        out["dilation"] = (int(dw), int(dh))
    return out


def DepthwiseConv(k: Any, ch: Any, activation: Any = None, **kw: Any) -> Conv:  # noqa: N802 - Flux's name
    """Flux ``DepthwiseConv(k, cin => cout, σ; stride, pad, dilation, bias)``: a :class:`Conv` with
    ``groups = cin`` (``cout`` a multiple of ``cin``); kernel ``(kw, kh, 1, cout)``."""
    if not isinstance(ch, (tuple, list)) or len(ch) != 2:
        raise ValueError(f"DepthwiseConv: channels must be (cin, cout); got {ch!r}")
    if "groups" in kw:
        raise ValueError("DepthwiseConv sets groups = cin; use Conv(...; groups=g) for other groups")
    return Conv(k, ch, activation, groups=ch[0], **kw)
