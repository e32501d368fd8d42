# Constructors and inspectors used by the Python bridge (pyflux_compress/backends/julia.py) through
# juliacall. They take and return only values juliacall converts without PythonCall-specific code:
# arrays (numpy arrays arrive as zero-copy PyArray views; Julia Arrays leave as zero-copy ArrayValues),
# numbers, strings, Bool, `nothing` and Tuples. Layout: the Python arrays already have Julia's shape
# (Dense weight (out, in), Conv weight (kw, kh, cin, cout)), so nothing is transposed here; batch-first
# data (N, features...) is passed as its all-axes transpose, which is Julia's (features..., N) array.

using Flux: Chain, Dense, Conv, CrossCor, MaxPool, MeanPool, GlobalMeanPool, BatchNorm, Dropout, flatten, softmax

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

Inverse of `activation`: `"σ"` for sigmoid (Julia's `sigmoid === σ`), `"flatten"`, `"identity"`, ...
"""
function activation_name(f)
    for (k, v) in _ACTIVATIONS
        v === f && return k == :sigmoid ? "σ" : string(k)
    end
    throw(ArgumentError("activation $f has no pyflux_compress name"))
end

_bias(b) = b === nothing ? false : b

dense_layer(W::AbstractMatrix, b, act::AbstractString) = Dense(W, _bias(b), activation(act))

function conv_layer(W::AbstractArray, b, act::AbstractString, stride::Tuple, pad::Tuple, dilation::Tuple,
                    groups::Integer, crosscor::Bool)
    crosscor && return CrossCor(W, _bias(b), activation(act); stride, pad, dilation)
    return Conv(W, _bias(b), activation(act); stride, pad, dilation, groups)
end

pool_layer(kind::AbstractString, k::Tuple, pad::Tuple, stride::Tuple) =
    kind == "MaxPool" ? MaxPool(k; pad, stride) :
    kind == "MeanPool" ? MeanPool(k; pad, stride) : throw(ArgumentError("unknown pool $kind"))

global_mean_pool() = GlobalMeanPool()
dropout_layer(p::Real) = Dropout(p)
chain_of(layers...) = Chain(layers...)

function batchnorm_layer(β, γ, μ, σ², ϵ::Real, momentum::Real, act::AbstractString, affine::Bool,
                         track_stats::Bool, active, chs::Integer)
    bn = BatchNorm(chs, activation(act); affine, track_stats, active, eps=Float32(ϵ), momentum=Float32(momentum))
    affine && (copyto!(bn.β, β); copyto!(bn.γ, γ))
    track_stats && (copyto!(bn.μ, μ); copyto!(bn.σ², σ²))
    return bn
end

_opt(x) = x isa AbstractArray ? x : nothing

"""
    layer_info(layer) -> Tuple

What the Python bridge needs to rebuild a layer: `(kind, fields...)`, e.g.
`("Dense", weight, bias_or_nothing, activation_name)`; `("Chain", (infos...,))` for nested Chains.
"""
layer_info(c::Chain) = ("Chain", Tuple(layer_info(l) for l in _layers(c)))
layer_info(l::Dense) = ("Dense", l.weight, _opt(l.bias), activation_name(l.σ))
layer_info(l::Conv) = ("Conv", l.weight, _opt(l.bias), activation_name(l.σ), l.stride, l.pad, l.dilation, l.groups)
layer_info(l::CrossCor) = ("CrossCor", l.weight, _opt(l.bias), activation_name(l.σ), l.stride, l.pad, l.dilation, 1)
layer_info(l::Union{MaxPool,MeanPool}) = (string(nameof(typeof(l))), l.k, l.pad, l.stride)
layer_info(::GlobalMeanPool) = ("GlobalMeanPool",)
layer_info(l::Dropout) = ("Dropout", l.p)
layer_info(l::BatchNorm) = ("BatchNorm", _opt(l.β), _opt(l.γ), _opt(l.μ), _opt(l.σ²), Float64(l.ϵ),
                            Float64(l.momentum), activation_name(l.λ), l.affine, l.track_stats, l.active, l.chs)
layer_info(f::Function) = ("Activation", activation_name(f))

# Python tuples of (key, value) pairs -> Dict (juliacall passes tuples as Julia Tuples).
as_dict(x::AbstractDict) = x
as_dict(x::Tuple) = Dict{String,Any}(String(k) => v for (k, v) in x)
as_dict(::Nothing) = nothing
as_strings(x::Tuple) = String[String(s) for s in x]
as_strings(::Nothing) = nothing
