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
import Statistics  # EmbeddingBag's default reduction is Statistics.mean (Flux src/layers/basic.jl)

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

"""
    laststep(x) -> x[:, end, :]

The last time step of a sequence batch `(features, len, batch)`: what pyflux_compress prints as `laststep`
(pyflux_compress/model/layers/laststep.py) and Flux users write as `x -> x[:, end, :]`. A named function so
that `model_from_arch` can build it and `activation_name` print it back.
"""
laststep(x::AbstractArray{<:Any,3}) = x[:, end, :]

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
    # SkipConnection / Parallel connections; `first` reads MultiHeadAttention's (y, α) in a Chain
    :+ => +, :vcat => vcat, :hcat => hcat, :first => first,
    # issue 13 (h13): `laststep` after a recurrent layer; EmbeddingBag's reductions (its second argument)
    :laststep => laststep, :mean => Statistics.mean, :sum => sum, :maximum => maximum)

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
# Names that are aliases of another key's function: never printed (Python prints σ, hardσ, logσ, gelu). A Dict
# iterates in hash order, so without this `hardσ` could come out as "hardsigmoid" on one run and not another.
const _ALIASES = (:sigmoid, :hardsigmoid, :logsigmoid, :gelu_tanh)

function activation_name(f)
    is_flatten(f) && return "flatten"
    for (k, v) in _ACTIVATIONS
        v === f && !(k in _ALIASES) && return string(k)
    end
    throw(ArgumentError("activation $f has no pyflux_compress name"))
end

const _LAYERS = Dict{Symbol,Any}(
    :Chain => Chain, :Dense => Dense, :Conv => Conv, :CrossCor => CrossCor, :MaxPool => MaxPool,
    :MeanPool => MeanPool, :GlobalMeanPool => GlobalMeanPool, :BatchNorm => BatchNorm, :Dropout => Dropout)

# The layers of issues 12 and 13, by name: resolved in Flux when a model string is read, so that this module
# loads with every Flux release of the compat range even where one lacks a constructor (0.14's RNN is a
# function returning the stateful `Recur`; MultiHeadAttention is 0.14+). Python prints each in this syntax
# (pyflux_compress/model/layers/*.py); test/fixtures/archs.txt holds the strings both sides check.
const _FLUX_LAYERS = (:ConvTranspose, :DepthwiseConv, :SamePad, :SkipConnection, :Parallel, :LayerNorm, :Scale,
                      :GroupNorm, :InstanceNorm, :AlphaDropout, :GlobalMaxPool, :AdaptiveMaxPool, :AdaptiveMeanPool,
                      :Upsample, :PixelShuffle, :Embedding, :EmbeddingBag, :MultiHeadAttention,
                      :RNN, :LSTM, :GRU, :GRUv3, :RNNCell, :LSTMCell, :GRUCell, :GRUv3Cell)
# Flux 0.15 replaced `Recur`-wrapped cells with sequence layers (src/layers/recurrent.jl): these names build
# different structs (different Flux.state trees) before 0.15, so model strings with them need Flux >= 0.15.
const _RECURRENT = (:RNN, :LSTM, :GRU, :GRUv3, :RNNCell, :LSTMCell, :GRUCell, :GRUv3Cell)
const _FLUX_VERSION = pkgversion(Flux)

"""
    CatConnection{D}()

The `SkipConnection`/`Parallel` connection `(xs...) -> cat(xs...; dims=D)`, as pyflux_compress prints a
concatenation along a Flux dimension other than 1 (`vcat`) or 2 (`hcat`). A named callable rather than a
closure so that `arch_string` can print it back; like `relu` it is a field-less singleton `Function`, so
`Flux.state` stores it as `()`, the value Python writes for every connection.
"""
struct CatConnection{D} <: Function end
(::CatConnection{D})(xs...) where {D} = cat(xs...; dims=D)

# The one closure `model_from_arch` accepts: exactly the text Python prints (model/connection.py `julia`).
const _MAX_CAT_DIMS = 8
_cat_closure(d::Int) = Base.remove_linenums!(Meta.parse("(xs...) -> cat(xs...; dims=$d)"))

function _interp_closure(ex::Expr)
    clean = Base.remove_linenums!(deepcopy(ex))
    for d in 1:_MAX_CAT_DIMS
        clean == _cat_closure(d) && return CatConnection{d}()
    end
    throw(ArgumentError("model_arch: unsupported function `$ex`; connections are +, vcat, hcat or " *
                        "`(xs...) -> cat(xs...; dims=d)`"))
end

# Resolve a layer name: the imported base layers, then the issue-12/13 names looked up in Flux.
function _layer_constructor(name::Symbol)
    haskey(_LAYERS, name) && return _LAYERS[name]
    name in _FLUX_LAYERS || return nothing
    name in _RECURRENT && _FLUX_VERSION < v"0.15" &&
        throw(ArgumentError("model_arch: $name needs Flux >= 0.15 (the sequence layers pyflux_compress writes); " *
                            "this is Flux $(_FLUX_VERSION), whose $name is the stateful Recur"))
    isdefined(Flux, name) || throw(ArgumentError("model_arch: Flux $(_FLUX_VERSION) has no $name"))
    return getfield(Flux, name)
end

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
_interp(x::QuoteNode) = x.value isa Symbol ? x.value : _interp(x.value)   # Upsample(:bilinear, ...)
function _interp(x::Symbol)
    haskey(_ACTIVATIONS, x) && return _ACTIVATIONS[x]
    throw(ArgumentError("model_arch: unknown name `$x`"))
end
function _interp(ex::Expr)
    if ex.head == :tuple
        return Tuple(_interp(a) for a in ex.args)
    elseif ex.head == :->
        return _interp_closure(ex)
    elseif ex.head == :. && length(ex.args) == 2 && ex.args[2] isa QuoteNode
        return _interp(ex.args[2].value)      # NNlib.relu, Flux.flatten, MLUtils.flatten: the name decides
    elseif ex.head == :call && ex.args[1] isa Expr && ex.args[1].head == :. && ex.args[1].args[2] isa QuoteNode
        return _interp(Expr(:call, ex.args[1].args[2].value, ex.args[2:end]...))   # Flux.Dense(...)
    elseif ex.head == :call && ex.args[1] == :(=>)
        return _interp(ex.args[2]) => _interp(ex.args[3])
    elseif ex.head == :call && ex.args[1] == :- && length(ex.args) == 2 && ex.args[2] isa Number
        return -ex.args[2]
    elseif ex.head == :call && ex.args[1] isa Symbol && _layer_constructor(ex.args[1]) !== nothing
        f = _layer_constructor(ex.args[1])
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
        ex.args[1] in _FLOAT32_KW_LAYERS && (kws = _float32_kws(kws))
        try
            return f(args...; kws...)
        catch err
            # a keyword this Flux release lacks (ConvTranspose `outpad` before 0.14.17, `return_state` before
            # 0.16, ...) or sizes that do not fit: name the call instead of a MethodError deep in Flux
            err isa Union{MethodError,AssertionError,DimensionMismatch,ErrorException} || rethrow()
            throw(ArgumentError("model_arch: Flux $(_FLUX_VERSION) cannot build `$ex`: " *
                                sprint(showerror, err)))
        end
    end
    throw(ArgumentError("model_arch: unsupported expression `$ex`"))
end

# BatchNorm{F,V,N,W} stores ϵ and momentum in fields of the same type N, and its keyword constructor passes
# `eps` and `momentum` through as given (Flux 0.14-0.16 src/layers/normalise.jl, defaults eps=1f-5,
# momentum=0.1f0): `eps=0.001` parsed as Float64 next to the Float32 default momentum is a MethodError.
# GroupNorm{F,V,N,W} and InstanceNorm{F,V,N,W} have the same two fields; LayerNorm{F,D,T,N} stores ϵ::T as given,
# and Python writes it as Float32. Flux's own defaults are Float32, so the parsed numbers are made Float32.
const _FLOAT32_KW_LAYERS = (:BatchNorm, :GroupNorm, :InstanceNorm, :LayerNorm)
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
arch_string(c::Chain) = string("Chain(", _layers_str(c.layers), ")")
# a NamedTuple of layers prints `name = layer` (Chain(enc = ..., dec = ...)); a Tuple or Vector in order
_layers_str(layers::NamedTuple) = join((string(k, " = ", arch_string(v)) for (k, v) in pairs(layers)), ", ")
_layers_str(layers) = join((arch_string(l) for l in layers), ", ")

function arch_string(l::Dense)
    out, in = size(l.weight)
    return string("Dense(", in, " => ", out, _act_str(l.σ), l.bias === false ? "; bias=false" : "", ")")
end
# Flux's `_print_conv_opt` order, as Python's conv_repr: pad, outpad, stride, dilation, groups, bias.
function _conv_opts(l)
    s = _act_str(l.σ)
    any(!=(0), l.pad) && (s *= ", pad=" * _tuple_str(l.pad))
    hasproperty(l, :outpad) && any(!=(0), l.outpad) && (s *= ", outpad=" * _tuple_str(l.outpad))
    any(!=(1), l.stride) && (s *= ", stride=" * _tuple_str(l.stride))
    any(!=(1), l.dilation) && (s *= ", dilation=" * _tuple_str(l.dilation))
    hasproperty(l, :groups) && l.groups != 1 && (s *= ", groups=" * string(l.groups))
    l.bias === false && (s *= ", bias=false")
    return s * ")"
end
# Conv weight (kw, kh, cin ÷ groups, cout); CrossCor has no groups field (Flux 0.14-0.16 src/layers/conv.jl)
function arch_string(l::Union{Conv,CrossCor})
    kw, kh, cin, cout = size(l.weight)
    groups = hasproperty(l, :groups) ? l.groups : 1
    return string(nameof(typeof(l)), "((", kw, ", ", kh, "), ", cin * groups, " => ", cout, _conv_opts(l))
end
# ConvTranspose weight (kw, kh, cout ÷ groups, cin): `convfilter(k, reverse(ch); groups)`
function arch_string(l::Flux.ConvTranspose)
    kw, kh, cout, cin = size(l.weight)
    return string("ConvTranspose((", kw, ", ", kh, "), ", cin, " => ", cout * l.groups, _conv_opts(l))
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
arch_string(::CatConnection{D}) where {D} = "(xs...) -> cat(xs...; dims=$D)"

# ------------------------------------------------------------------------------ issue 12: the vision zoo
# Each prints what the Python layer's `__repr__` prints (pyflux_compress/model/layers/<name>.py).
arch_string(l::Flux.SkipConnection) = string("SkipConnection(", arch_string(l.layers), ", ", arch_string(l.connection), ")")
function arch_string(l::Flux.Parallel)
    sep = l.layers isa NamedTuple ? "; " : ", "
    return string("Parallel(", arch_string(l.connection), sep, _layers_str(l.layers), ")")
end
function arch_string(l::Flux.LayerNorm)
    s = string("LayerNorm(", join(l.size, ", "), _act_str(l.λ))
    l.affine || (s *= "; affine=false")
    Float32(l.ϵ) == 1f-5 || (s *= (l.affine ? "; " : ", ") * "eps=" * _float_str(l.ϵ))
    return s * ")"
end
function arch_string(l::Flux.Scale)
    s = string("Scale(", join(size(l.scale), ", "), _act_str(l.σ))
    return s * (l.bias === false ? "; bias=false)" : ")")
end
# GroupNorm(chs, G, λ; ...) and InstanceNorm(chs, λ; ...): Python prints affine when it differs from the layer's
# default (GroupNorm true, InstanceNorm false), then track_stats=true (InstanceNorm only: Python refuses it for
# GroupNorm, which has no running statistics from Flux 0.15 on), eps, momentum, active.
function _norm_opts(l, affine_default::Bool)
    l.track_stats && l isa Flux.GroupNorm &&
        throw(ArgumentError("GroupNorm with track_stats=true has no pyflux_compress form"))
    s = _act_str(l.λ)
    l.affine == affine_default || (s *= ", affine=" * string(l.affine))
    l.track_stats && (s *= ", track_stats=true")
    Float32(l.ϵ) == 1f-5 || (s *= ", eps=" * _float_str(l.ϵ))
    Float32(l.momentum) == 0.1f0 || (s *= ", momentum=" * _float_str(l.momentum))
    l.active === nothing || (s *= ", active=" * string(l.active))
    return s * ")"
end
arch_string(l::Flux.GroupNorm) = string("GroupNorm(", l.chs, ", ", l.G, _norm_opts(l, true))
arch_string(l::Flux.InstanceNorm) = string("InstanceNorm(", l.chs, _norm_opts(l, false))
function arch_string(l::Flux.AlphaDropout)
    s = string("AlphaDropout(", _p_str(l.p))
    l.active === nothing || (s *= ", active=" * string(l.active))
    return s * ")"
end
arch_string(l::Flux.AdaptiveMaxPool) = string("AdaptiveMaxPool(", l.out, ")")
arch_string(l::Flux.AdaptiveMeanPool) = string("AdaptiveMeanPool(", l.out, ")")
arch_string(::Flux.GlobalMaxPool) = "GlobalMaxPool()"
arch_string(l::Flux.PixelShuffle) = string("PixelShuffle(", l.r, ")")
arch_string(l::Flux.Embedding) = string("Embedding(", size(l.weight, 2), " => ", size(l.weight, 1), ")")
# Flux's show omits the reduction; Python prints it unless it is the default mean (model/layers/embeddingbag.py)
arch_string(l::Flux.EmbeddingBag) = string("EmbeddingBag(", size(l.weight, 2), " => ", size(l.weight, 1),
                                           l.reduction === Statistics.mean ? "" : ", " * activation_name(l.reduction), ")")
# Upsample{mode,S,T}: the mode is a type parameter only; `scale` is stored as given (a number or a tuple).
function arch_string(l::Flux.Upsample)
    s = string("Upsample(:", typeof(l).parameters[1])
    l.scale === nothing || (s *= ", scale = " * (l.scale isa Tuple ? _tuple_str(l.scale) : string(l.scale)))
    l.size === nothing || (s *= ", size = " * string(Tuple(l.size)))
    return s * ")"
end

# ----------------------------------------------------- issue 13: recurrent layers, MultiHeadAttention
# By type name, not `::Flux.RNN` signatures: under Flux 0.14 `RNN` is a function (returning `Recur`), which
# a method signature cannot name. The cell fields are Flux 0.15/0.16's (src/layers/recurrent.jl):
# RNNCell(σ, Wi, Wh, bias), LSTMCell(Wi, Wh, bias), GRUCell(Wi, Wh, b), GRUv3Cell(Wi, Wh, b, Wh_h̃), and the
# sequence layers hold `cell`.
function arch_string(l)
    name = nameof(typeof(l))
    parentmodule(typeof(l)) === Flux || throw(ArgumentError("arch_string: $(typeof(l)) is not a Flux layer"))
    name in (:RNNCell, :LSTMCell, :GRUCell, :GRUv3Cell) && return _cell_str(l, name)
    name in (:RNN, :LSTM, :GRU, :GRUv3) && return _recurrent_str(l, name)
    name === :MultiHeadAttention && return _mha_str(l)
    name === :Recur && throw(ArgumentError("arch_string: Flux <= 0.14's stateful Recur is not written; " *
                                           "pyflux_compress checkpoints hold Flux >= 0.15 recurrent layers"))
    throw(ArgumentError("arch_string: $(typeof(l)) has no pyflux_compress syntax"))
end

_cell_bias(c) = hasproperty(c, :bias) ? c.bias : c.b       # RNNCell/LSTMCell `bias`, GRUCell/GRUv3Cell `b`
function _cell_str(c, name::Symbol)
    s = string(name, "(", size(c.Wi, 2), " => ", size(c.Wh, 2))
    name === :RNNCell && (s *= ", " * activation_name(c.σ))     # Python always prints RNN's σ
    return s * (_cell_bias(c) === false ? "; bias=false)" : ")")
end
# Flux PR #2557 (Dec 2024, in 0.16) added `return_state` to the sequence layers as their first type parameter
# (`RNN{S,M}`, rebuilt by a custom `functor` as `RNN{S}(cell)`); 0.15's have only the cell's type. Python reads
# it the same way (the JLD2 struct's first parameter). It adds no field: Flux.state is `(cell = ...,)` in both.
function _returns_state(l)
    params = typeof(l).parameters
    return length(params) == 2 && params[1] === true
end
function _recurrent_str(l, name::Symbol)
    s = _cell_str(l.cell, Symbol(name, :Cell))
    s = string(name) * s[length(string(name, :Cell)) + 1:end]
    _returns_state(l) && (s = s[1:end-1] * (occursin(';', s) ? ", " : "; ") * "return_state=true)")
    return s
end
# MultiHeadAttention(dims; nheads, bias, dropout_prob), dims in the shortest form that gives the sizes back
function _mha_str(l)
    qk, q_in = size(l.q_proj.weight)
    k_in = size(l.k_proj.weight, 2)
    v, v_in = size(l.v_proj.weight)
    out = size(l.out_proj.weight, 1)
    dims = if allequal((q_in, k_in, v_in, qk, v, out))
        string(q_in)
    else
        inp = q_in == k_in == v_in ? string(q_in) : "($q_in, $k_in, $v_in)"
        string(inp, " => ", qk == v ? string(qk) : "($qk, $v)", " => ", out)
    end
    s = string("MultiHeadAttention(", dims, "; nheads=", l.nheads)
    l.q_proj.bias === false || (s *= ", bias=true")
    iszero(l.attn_drop.p) || (s *= ", dropout_prob=" * _p_str(l.attn_drop.p))
    return s * ")"
end

