# Checkpoints (twins of pfc.save / pfc.load / pfc.load_state).
#
# File layout, shared with Python (io/checkpoint.py): a JLD2 file with
#   model_state : Flux.state(model)  -- NamedTuple tree (layers = ((weight, bias, σ = ()), ...),)
#   model_arch  : String, the model in one-line Flux syntax, e.g. "Chain(Dense(784 => 128, relu), Dense(128 => 10))",
#                 written by `arch_string` exactly as Python's `str(model)` prints it (not Julia's `string(model)`,
#                 which may qualify names, e.g. `NNlib.relu`, depending on what the caller has loaded)
# Loading never evaluates code: `model_from_arch` interprets the syntax with a whitelist of layer
# constructors and activations (qualified names such as `NNlib.relu` are accepted too), then
# `Flux.loadmodel!` copies the arrays in.

using Flux: Chain, Dense, Conv, CrossCor, MaxPool, MeanPool, GlobalMeanPool, BatchNorm, Dropout, flatten
using Flux: relu, sigmoid, σ, leakyrelu, elu, gelu, swish, softmax, state, loadmodel!
import Flux  # the module itself: the issue-12 rows of the layer/activation tables below read Flux.<name>
import JLD2

"""
    save_model(path, model) -> path

`JLD2.jldsave(path; model_state = Flux.state(model), model_arch = arch_string(model))`, written to a
temporary file first and moved into place (atomic).
"""
function save_model(path::AbstractString, model)
    model isa QuantizedChain && throw(ArgumentError("save_model: dequantize(qc) first, or save qc.model"))
    tmp = string(path, ".tmp-", getpid())
    try
        JLD2.jldsave(tmp; model_state = state(model), model_arch = arch_string(model))
        mv(tmp, path; force=true)
    finally
        isfile(tmp) && rm(tmp)
    end
    return path
end

"""
    load_state(path) -> NamedTuple

The `model_state` tree of a checkpoint (as written by `save_model` or Python's `pfc.save`).
"""
function load_state(path::AbstractString)
    isfile(path) || throw(ArgumentError("load_state: no such file $path"))
    return JLD2.load(path, "model_state")
end

"""
    load_model(path, template=nothing) -> model

Rebuild the model: from `template` (a model of the same architecture, copied, not mutated) or from the
file's `model_arch`; then `Flux.loadmodel!(model, load_state(path))`.
"""
function load_model(path::AbstractString, template=nothing)
    st = load_state(path)
    model = template === nothing ? model_from_arch(JLD2.load(path, "model_arch")) : deepcopy(template)
    return loadmodel!(model, st)
end

const _ACTIVATIONS = Dict{Symbol,Any}(
    :relu => relu, :sigmoid => sigmoid, :σ => σ, :tanh => tanh, :softmax => softmax,
    :leakyrelu => leakyrelu, :elu => elu, :gelu => gelu, :swish => swish, :identity => identity,
    :flatten => flatten,
    # issue 12: the rest of NNlib's activations (Flux re-exports NNlib)
    :hardσ => Flux.hardσ, :hardsigmoid => Flux.hardσ, :logσ => Flux.logσ, :logsigmoid => Flux.logσ,
    :hardtanh => Flux.hardtanh, :relu6 => Flux.relu6, :rrelu => Flux.rrelu, :selu => Flux.selu,
    :celu => Flux.celu, :softplus => Flux.softplus, :softsign => Flux.softsign, :logcosh => Flux.logcosh,
    :mish => Flux.mish, :tanhshrink => Flux.tanhshrink, :softshrink => Flux.softshrink, :trelu => Flux.trelu,
    :lisht => Flux.lisht, :tanh_fast => Flux.tanh_fast, :sigmoid_fast => Flux.sigmoid_fast,
    :hardswish => Flux.hardswish, :logsoftmax => Flux.logsoftmax, :gelu_tanh => Flux.gelu,
    :gelu_erf => x -> Flux.gelu_erf(x),   # resolved when called: NNlib defines it with SpecialFunctions loaded
    # SkipConnection / Parallel connections
    :+ => +, :vcat => vcat, :hcat => hcat)

"""
    is_flatten(f) -> Bool

Whether `f` is a flatten function: `Flux.flatten` or `MLUtils.flatten`. They are not always the same object
(Flux's `src/layers/stateless.jl` defines its own `flatten`, and Flux's docs now point to `MLUtils.flatten`),
so the name decides, as `model_from_arch` does for qualified names.
"""
is_flatten(f) = f isa Function && nameof(f) === :flatten

"""
    activation(name) -> Function

The Flux function for a pyflux_compress activation name ("relu", "σ", "sigmoid", "identity", "flatten", ...).
"""
function activation(name::AbstractString)
    f = get(_ACTIVATIONS, Symbol(name), nothing)
    f === nothing && throw(ArgumentError("unknown activation \"$name\"; known: $(join(sort!(string.(collect(keys(_ACTIVATIONS)))), ", "))"))
    return f
end

"""
    activation_name(f) -> String

Inverse of `activation`: `"σ"` for sigmoid (Julia's `sigmoid === σ`), `"flatten"` (either flatten), `"identity"`, ...
"""
function activation_name(f)
    is_flatten(f) && return "flatten"
    for (k, v) in _ACTIVATIONS
        v === f && return k == :sigmoid ? "σ" : string(k)
    end
    throw(ArgumentError("activation $f has no pyflux_compress name"))
end

const _LAYERS = Dict{Symbol,Any}(
    :Chain => Chain, :Dense => Dense, :Conv => Conv, :CrossCor => CrossCor, :MaxPool => MaxPool,
    :MeanPool => MeanPool, :GlobalMeanPool => GlobalMeanPool, :BatchNorm => BatchNorm, :Dropout => Dropout,
    # issue 12's layers: the Python side prints them in this Flux syntax (pyflux_compress/model/layers/*.py)
    :ConvTranspose => Flux.ConvTranspose, :DepthwiseConv => Flux.DepthwiseConv, :SamePad => Flux.SamePad,
    :SkipConnection => Flux.SkipConnection, :Parallel => Flux.Parallel, :LayerNorm => Flux.LayerNorm,
    :Scale => Flux.Scale, :GroupNorm => Flux.GroupNorm, :InstanceNorm => Flux.InstanceNorm,
    :AlphaDropout => Flux.AlphaDropout, :GlobalMaxPool => Flux.GlobalMaxPool,
    :AdaptiveMaxPool => Flux.AdaptiveMaxPool, :AdaptiveMeanPool => Flux.AdaptiveMeanPool,
    :Upsample => Flux.Upsample, :PixelShuffle => Flux.PixelShuffle)

"""
    model_from_arch(arch::AbstractString) -> model

Build a model (freshly initialised) from its one-line Flux syntax without evaluating code: only
the layer constructors and activations above, numbers, `true`/`false`, `=>` pairs, tuples and
keyword arguments are accepted; anything else is an ArgumentError naming it.
"""
function model_from_arch(arch::AbstractString)
    ex = Meta.parse(arch; raise=false)
    ex isa Expr && ex.head in (:error, :incomplete) &&
        throw(ArgumentError("model_arch is not valid Flux syntax: $(repr(arch))"))
    return _interp(ex)
end

_interp(x::Union{Number,Bool}) = x
_interp(x::QuoteNode) = _interp(x.value)
function _interp(x::Symbol)
    haskey(_ACTIVATIONS, x) && return _ACTIVATIONS[x]
    throw(ArgumentError("model_arch: unknown name `$x`"))
end
function _interp(ex::Expr)
    if ex.head == :tuple
        return Tuple(_interp(a) for a in ex.args)
    elseif ex.head == :. && length(ex.args) == 2 && ex.args[2] isa QuoteNode
        return _interp(ex.args[2])            # NNlib.relu, Flux.flatten, MLUtils.flatten: the name decides
    elseif ex.head == :call && ex.args[1] isa Expr && ex.args[1].head == :. && ex.args[1].args[2] isa QuoteNode
        return _interp(Expr(:call, ex.args[1].args[2].value, ex.args[2:end]...))   # Flux.Dense(...)
    elseif ex.head == :call && ex.args[1] == :(=>)
        return _interp(ex.args[2]) => _interp(ex.args[3])
    elseif ex.head == :call && ex.args[1] == :- && length(ex.args) == 2 && ex.args[2] isa Number
        return -ex.args[2]
    elseif ex.head == :call && ex.args[1] isa Symbol && haskey(_LAYERS, ex.args[1])
        f = _LAYERS[ex.args[1]]
        args = Any[]
        kws = Pair{Symbol,Any}[]
        for a in ex.args[2:end]
            if a isa Expr && a.head == :parameters
                append!(kws, [k.args[1] => _interp(k.args[2]) for k in a.args])
            elseif a isa Expr && a.head == :kw
                push!(kws, a.args[1] => _interp(a.args[2]))
            else
                push!(args, _interp(a))
            end
        end
        f === BatchNorm && (kws = _float32_kws(kws))
        return f(args...; kws...)
    end
    throw(ArgumentError("model_arch: unsupported expression `$ex`"))
end

# BatchNorm{F,V,N,W} stores ϵ and momentum in fields of the same type N, and its keyword constructor passes
# `eps` and `momentum` through as given (Flux 0.14-0.16 src/layers/normalise.jl, defaults eps=1f-5,
# momentum=0.1f0): `eps=0.001` parsed as Float64 next to the Float32 default momentum is a MethodError. Flux's
# own defaults are Float32, so the parsed numbers are made Float32.
_float32_kws(kws) = [k => (k in (:eps, :ϵ, :momentum) && v isa Real ? Float32(v) : v) for (k, v) in kws]

# ---------------------------------------------------------------------------------------------------------
# The model's one-line syntax, exactly as pyflux_compress prints it (model/layers.py `__repr__`), so that
# `model_arch` is the same string whichever language wrote the file.

_tuple_str(t) = all(==(t[1]), t) ? string(t[1]) : string("(", join(t, ", "), length(t) == 1 ? ",)" : ")")
_act_str(f) = f === identity ? "" : ", " * activation_name(f)
# Shortest Float32 text without Julia's f0 suffix: 0.001f0 -> "0.001", 1.0f-5 -> "1.0e-5" (also valid Python).
function _float_str(x::Real)
    text = string(Float32(x))
    return endswith(text, "f0") ? text[1:end-2] : replace(text, "f" => "e")
end

"""
    arch_string(model) -> String

One-line Flux syntax of `model`, what Python's `str(model)` gives for the same model (e.g.
`"Chain(Dense(784 => 128, relu), Dense(128 => 10))"`), character for character except that non-default
BatchNorm `eps`/`momentum` may be formatted differently (same value); `model_from_arch` reads it back.
"""
arch_string(c::Chain) = string("Chain(", join((arch_string(l) for l in _layers(c)), ", "), ")")
function arch_string(l::Dense)
    out, in = size(l.weight)
    return string("Dense(", in, " => ", out, _act_str(l.σ), l.bias === false ? "; bias=false" : "", ")")
end
function arch_string(l::Union{Conv,CrossCor})
    kw, kh, cin, cout = size(l.weight)
    s = string(nameof(typeof(l)), "((", kw, ", ", kh, "), ", cin * (l isa Conv ? l.groups : 1), " => ", cout, _act_str(l.σ))
    any(!=(0), l.pad) && (s *= ", pad=" * _tuple_str(l.pad))
    any(!=(1), l.stride) && (s *= ", stride=" * _tuple_str(l.stride))
    any(!=(1), l.dilation) && (s *= ", dilation=" * _tuple_str(l.dilation))
    l.bias === false && (s *= ", bias=false")
    return s * ")"
end
function arch_string(l::Union{MaxPool,MeanPool})
    s = string(nameof(typeof(l)), "((", join(l.k, ", "), length(l.k) == 1 ? ",)" : ")")
    any(!=(0), l.pad) && (s *= ", pad=" * _tuple_str(l.pad))
    l.stride != l.k && (s *= ", stride=" * _tuple_str(l.stride))
    return s * ")"
end
arch_string(::GlobalMeanPool) = "GlobalMeanPool()"
function arch_string(l::BatchNorm)
    s = string("BatchNorm(", l.chs, _act_str(l.λ))
    l.affine || (s *= ", affine=false")
    l.track_stats || (s *= ", track_stats=false")
    Float32(l.ϵ) == 1f-5 || (s *= ", eps=" * _float_str(l.ϵ))
    Float32(l.momentum) == 0.1f0 || (s *= ", momentum=" * _float_str(l.momentum))
    l.active === nothing || (s *= ", active=" * string(l.active))
    return s * ")"
end
# Python prints `p` with repr (shortest round-trip text of a Float64); a Float32 p printed through Float64
# would read 0.10000000149011612, so Float32 values get their own shortest text.
_p_str(p::Float32) = _float_str(p)
_p_str(p::Real) = string(Float64(p))

function arch_string(l::Dropout)
    s = string("Dropout(", _p_str(l.p))
    l.dims isa Colon || (s *= ", dims=" * string(l.dims))
    l.active === nothing || (s *= ", active=" * string(l.active))
    return s * ")"
end
arch_string(f::Function) = activation_name(f)
