"""Flux ``ConvTranspose``: the transpose (input gradient) of Flux's true convolution; ONNX ``ConvTranspose``.

Flux (0.14-0.16, ``src/layers/conv.jl``)::

    struct ConvTranspose{N,M,F,A,V}
      σ::F; weight::A; bias::V; stride::NTuple{N,Int}; pad::NTuple{M,Int}
      outpad::NTuple{N,Int}        # from Flux 0.14.x on (files written before have no outpad field)
      dilation::NTuple{N,Int}; groups::Int
    end
    ConvTranspose(k, in => out, σ=identity; stride=1, pad=0, outpad=0, dilation=1, groups=1, bias=true,
                  init=glorot_uniform)  # weight = init(k..., out ÷ groups, in): shape (kw, kh, out/groups, in)
    (c::ConvTranspose)(x) = σ.(∇conv_data(x, c.weight, conv_transpose_dims(c, x)) .+ bias)
    calc_padding(::Type{ConvTranspose}, ::SamePad, k, dilation, stride) = calc_padding(Conv, SamePad(), k .- stride .+ 1, ...)

So with ``stride=s``, ``pad=SamePad()`` the output is ``s`` times the input. Output size per axis:
``(n - 1) s + 1 + d (k - 1) - (lo + hi) + outpad``. ``Flux.state`` fields: σ, weight, bias, stride, pad,
outpad, dilation, groups. Input ``(N, in, H, W)``, output ``(N, out, Ho, Wo)``.

Forward: ``model/_conv.py``'s ``conv_transpose2d_forward`` (NNlib's ``∇conv_data``: the adjoint of Flux's
true convolution with the same weight; tests check the adjoint identity and PyTorch). ONNX ``ConvTranspose`` is
the adjoint of a *cross-correlation*, so the exported
kernel is flipped: ``W_onnx = flip(w, (0, 1)).transpose(3, 2, 1, 0)`` = ``(in, out/groups, kh, kw)``.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..._validate import check_int, check_rng, check_tuple
from .. import _conv
from ..activations import Activation, get_activation
from ..registry import register_layer
from ..syntax import as_ints, as_pad, as_pair
from .base import activation_of, bias_array, init_fn
from .conv import SpatialConv, conv_pad, flux_conv_to_onnx, onnx_conv_to_flux, spatial_attrs, spatial_from_onnx


@register_layer
class ConvTranspose(SpatialConv):
    """Transposed 2-D convolution with Flux's fields and semantics (see the module docstring).

    ``ConvTranspose((kw, kh), (cin, cout), σ; stride=1, pad=0, outpad=0, dilation=1, groups=1, bias=True)``
    (Python for ``ConvTranspose((4, 4), 16 => 8, relu)``) or Flux's ``ConvTranspose(weight, bias, σ; ...)``
    with ``weight (kw, kh, cout/groups, cin)``. Tuples are in Flux order (W first): ``stride (sw, sh)``,
    ``pad (w_lo, w_hi, h_lo, h_hi)`` (also an int, ``(pw, ph)``, ``"same"``/``SamePad()``), ``outpad (ow, oh)``.
    """

    flux_name = "ConvTranspose"
    batch_mode = "independent"
    flux_fields = {"σ": "activation", "weight": "weight", "bias": "bias", "stride": "stride", "pad": "pad",
                   "outpad": "outpad", "dilation": "dilation", "groups": "groups"}
    flux_activation_param = 2
    onnx_ops = ("ConvTranspose",)
    out_axes = {"weight": 2, "bias": 0}        # output channels: axis 2 (within a group) of the kernel
    in_axes = {"weight": 3}
    empty_output = "gives an empty output: padding too large"

    def __init__(self, k: Any, ch: Any = None, activation: Any = None, *, stride: Any = 1, pad: Any = 0,
                 outpad: Any = 0, dilation: Any = 1, groups: int = 1, bias: Any = True,
                 init: Callable | None = None, rng: np.random.Generator | None = None,
                 seed: int | None = None) -> None:
        who = self.flux_name
        self.groups = check_int(f"{who} groups", groups, min=1)
        if isinstance(k, np.ndarray):  # Flux's ConvTranspose(weight, bias, σ; ...)
            if k.ndim != 4:
                raise ValueError(f"{who}: weight must have shape (kw, kh, cout/groups, cin); got {k.shape}")
            self.weight = k if k.dtype.kind == "f" else k.astype(np.float32)
            if ch is not None and not isinstance(ch, (Activation, str)):
                bias = ch
            elif ch is not None:
                activation = ch
        else:
            kk = check_tuple(f"{who} kernel size k", tuple(k) if isinstance(k, list) else k, 2, min=1)
            if not isinstance(ch, (tuple, list)) or len(ch) != 2:
                raise ValueError(f"{who}: channels must be (cin, cout), Python for cin => cout; got {ch!r}")
            cin = check_int(f"{who} cin", ch[0], min=1)
            cout = check_int(f"{who} cout", ch[1], min=1)
            if cin % self.groups or cout % self.groups:
                raise ValueError(f"{who}: cin={cin} and cout={cout} must both be divisible by groups="
                                 f"{self.groups}")
            gen = check_rng(seed, rng)
            self.weight = np.asarray(init_fn(init)(gen, kk[0], kk[1], cout // self.groups, cin), np.float32)
        if self.weight.shape[3] % self.groups:
            raise ValueError(f"{who}: input channels {self.weight.shape[3]} not divisible by groups={self.groups}")
        self.activation: Activation = get_activation(activation)
        self.bias = bias_array(bias, self.out_channels, self.weight.dtype, who)
        self.stride = check_tuple(f"{who} stride", stride, 2, min=1)
        self.dilation = check_tuple(f"{who} dilation", dilation, 2, min=1)
        self.outpad = check_tuple(f"{who} outpad", outpad, 2, min=0)
        if any(o >= st for o, st in zip(self.outpad, self.stride)):   # NNlib's sizes disagree otherwise
            raise ValueError(f"{who}: outpad {self.outpad} must be smaller than stride {self.stride}")
        # Flux's calc_padding: SamePad for ConvTranspose is Conv's SamePad of the kernel k - stride + 1
        self.pad = conv_pad(pad, tuple(ki - si + 1 for ki, si in zip(self.k, self.stride)), self.dilation, who)

    # ---- sizes and kernels (model/_conv.py's transposed convolution: NNlib's ∇conv_data) --------------
    @property
    def in_channels(self) -> int:
        return int(self.weight.shape[3])

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[2]) * self.groups

    def spatial_size(self, h: int, w: int) -> tuple[int, int]:
        (kw, kh), (sw, sh), (dw, dh), (ow, oh) = self.k, self.stride, self.dilation, self.outpad
        w_lo, w_hi, h_lo, h_hi = self.pad
        return ((h - 1) * sh + 1 + dh * (kh - 1) - h_lo - h_hi + oh,
                (w - 1) * sw + 1 + dw * (kw - 1) - w_lo - w_hi + ow)

    def conv_forward(self, x: np.ndarray) -> tuple[np.ndarray, Any]:
        return _conv.conv_transpose2d_forward(x, self.weight, self.bias, self.stride, self.pad, self.dilation,
                                              flip=True, groups=self.groups, outpad=self.outpad)

    def conv_backward(self, ccache: Any, dz: np.ndarray, need_dx: bool) -> tuple:
        return _conv.conv_transpose2d_backward(ccache, np.ascontiguousarray(dz), need_dx=need_dx)

    # ---- syntax --------------------------------------------------------------------------------------
    @classmethod
    def from_syntax(cls, call: Any) -> "ConvTranspose":
        call.check_kw("stride", "pad", "outpad", "dilation", "groups", "bias", "init")
        call.no_init()
        args = call.args
        if len(args) < 2 or len(args) > 3:
            raise ValueError("expected ConvTranspose((kw, kh), cin => cout[, σ]; ...)")
        kw = {key: (as_pad(v) if key == "pad" else as_ints(v, key)) for key, v in call.kwargs.items()
              if key in ("stride", "pad", "outpad", "dilation", "groups")}
        return cls(as_ints(args[0], "kernel size"), as_pair(args[1], "channels"),
                   call.activation(args[2]) if len(args) > 2 else None, bias=call.bool("bias", True),
                   init=call.init, rng=call.rng, **kw)

    # ---- Flux struct / state ---------------------------------------------------------------------------
    @classmethod
    def from_flux(cls, fields: dict[str, Any], build: Callable | None = None) -> "ConvTranspose":
        """From a JLD2 struct or state tree; ``outpad`` is absent in files from Flux before 0.14.x (0)."""
        w = fields.get("weight")
        if not isinstance(w, np.ndarray) or w.ndim != 4:
            raise ValueError("ConvTranspose weight must be a 4-D (kw, kh, cout/groups, cin) array")
        return cls(np.zeros(w.shape, np.float32), fields.get("bias") is not False,
                   activation_of(fields.get("σ")), stride=tuple(fields["stride"]),
                   pad=tuple(fields["pad"]), outpad=tuple(fields.get("outpad", (0, 0))),
                   dilation=tuple(fields["dilation"]), groups=int(fields.get("groups", 1)))

    # ---- ONNX ----------------------------------------------------------------------------------------
    def onnx_kernel(self, weight: np.ndarray | None = None) -> np.ndarray:
        """ONNX ConvTranspose kernel ``(cin, cout/groups, kh, kw)``: flipped (ONNX transposes a correlation)."""
        return flux_conv_to_onnx(np.asarray(self.weight if weight is None else weight, np.float32), flipped=True)

    def onnx_attrs(self) -> dict[str, Any]:
        ow, oh = self.outpad
        return {**spatial_attrs(self), "output_padding": [int(oh), int(ow)], "group": self.groups}

    def to_onnx(self, g: Any, x: str, weight: np.ndarray | None = None) -> str:
        p = g.fresh("convt")
        inputs = [x, g.const(f"{p}_W", self.onnx_kernel(weight), allow_sparse=True)]
        if self.bias is not None:
            inputs.append(g.const(f"{p}_b", np.asarray(self.bias, np.float32)))
        (y,) = g.node("ConvTranspose", inputs, prefix=p, **self.onnx_attrs())
        return self.activation.to_onnx(g, y)

    @classmethod
    def from_onnx(cls, node: Any, r: Any) -> "ConvTranspose":
        """The inverse of :meth:`to_onnx`: ONNX kernel ``(cin, cout/g, kh, kw)`` flipped back to Flux's."""
        attrs = r.attrs(node)
        if attrs.get("output_shape") is not None or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            raise r.error(node, "ConvTranspose with output_shape/auto_pad is not supported; export explicit pads")
        w = r.const(node, 1).astype(np.float32)
        if w.ndim != 4:
            raise r.error(node, f"only 2-D ConvTranspose imports (weight ndim {w.ndim})")
        bias = r.const(node, 2).astype(np.float32).reshape(-1) if r.has_input(node, 2) else False
        oh, ow = attrs.get("output_padding", [0, 0])
        return cls(onnx_conv_to_flux(w, flipped=True), bias, outpad=(int(ow), int(oh)),
                   groups=int(attrs.get("group", 1)), **spatial_from_onnx(attrs))

