# Model traversal shared by every technique.
#
# `walk(model)` lists the leaf layers of a (possibly nested) Chain in order, with the same paths as
# Python's `Chain.walk()`: "layers[1]", "layers[3].layers[1]" (1-based). Techniques compute a new
# list of leaves and `rebuild` puts them back into the same nesting, so no function mutates its input.

using Flux: Chain, Dense, Conv, CrossCor

"""
    walk(model) -> Vector{Pair{String,Any}}

Every leaf layer of `model` (Chains are descended into) as `path => layer`, in forward order.
"""
function walk(model)
    out = Pair{String,Any}[]
    _walk!(out, model, "")
    return out
end

function _walk!(out, model::Chain, prefix::String)
    for (i, layer) in enumerate(_layers(model))
        path = string(prefix, isempty(prefix) ? "" : ".", "layers[", i, "]")
        _walk!(out, layer, path)
    end
    return out
end
_walk!(out, layer, prefix::String) = push!(out, (isempty(prefix) ? "layers[1]" : prefix) => layer)

# Chain stores a Tuple (or a Vector); named chains are not produced by pyflux_compress.
function _layers(c::Chain)
    c.layers isa NamedTuple && throw(ArgumentError("named Chains are not supported; use Chain(layers...)"))
    return collect(Any, c.layers)
end

"""
    rebuild(model, leaves::AbstractVector) -> new model

Put `leaves` (one per entry of `walk(model)`, same order) back into `model`'s nesting. A leaf may be
a `Vector` of layers: it is spliced into the enclosing Chain (used by `lowrank`), or `nothing`: removed.
"""
function rebuild(model, leaves::AbstractVector)
    length(leaves) == length(walk(model)) ||
        throw(ArgumentError("rebuild: expected $(length(walk(model))) leaves, got $(length(leaves))"))
    counter = Ref(0)
    built = _rebuild(model, leaves, counter)
    return built isa Chain ? built : Chain(_splice(built)...)
end

function _rebuild(c::Chain, leaves, counter)
    parts = Any[]
    for layer in _layers(c)
        append!(parts, _splice(_rebuild(layer, leaves, counter)))
    end
    return Chain(parts...)
end
function _rebuild(layer, leaves, counter)
    counter[] += 1
    return leaves[counter[]]
end
_splice(x::AbstractVector) = x
_splice(::Nothing) = Any[]
_splice(x) = Any[x]

# Layers whose `weight` is pruned, quantized, shared: the same set as Python's Dense / Conv / CrossCor.
const WeightLayer = Union{Dense,Conv,CrossCor}
is_weight_layer(layer) = layer isa WeightLayer

"""
    corder(A) -> Vector

The entries of `A` in numpy's C (row-major) order of the same-shaped array, i.e. the last index varies
fastest. pyflux_compress breaks magnitude ties in this order ("model order": walk order, then C order
inside an array), so FluxCompress uses it wherever an order decides a result. `corder_index(A)` gives
the matching Julia linear (column-major) indices: `corder(A) == vec(A)[corder_index(A)]`.
"""
corder(A::AbstractArray) = vec(permutedims(A, ndims(A):-1:1))
corder_index(A::AbstractArray) = corder(reshape(collect(1:length(A)), size(A)))

layer_type_name(l) = string(nameof(typeof(l)))

# Trainable parameter names of a leaf, Flux field order (weight, bias / β, γ).
param_names(l::WeightLayer) = l.bias isa AbstractArray ? [:weight, :bias] : [:weight]
param_names(l) = Symbol[]

"""
    prunable(model, include=nothing) -> Vector{Tuple{String,Symbol}}

The `(path, parameter)` targets a pruning function works on, in model order (twin of
`pyflux_compress.compression._common.prunable`). `include`: `nothing` = the weight of every
Dense/Conv/CrossCor; otherwise strings, each a layer path (`"layers[2]"` -> its weight), a parameter
path (`"layers[2].bias"`) or a layer type (`"Dense"`). An entry matching nothing is an error listing
the layers.
"""
function prunable(model, include=nothing)
    leaves = walk(model)
    include === nothing && return [(p, :weight) for (p, l) in leaves if is_weight_layer(l)]
    entries = include isa AbstractString ? [String(include)] : String.(collect(include))
    found = Set{Tuple{String,Symbol}}()
    for entry in entries
        hits = Tuple{String,Symbol}[]
        for (p, l) in leaves
            names = param_names(l)
            if entry == layer_type_name(l) || entry == p
                :weight in names && push!(hits, (p, :weight))
            elseif startswith(entry, p * ".") && Symbol(entry[length(p)+2:end]) in names
                push!(hits, (p, Symbol(entry[length(p)+2:end])))
            end
        end
        isempty(hits) && throw(ArgumentError("include: $(repr(entry)) matches no layer parameter; " *
                                             "layers: $(join(["$p ($(layer_type_name(l)))" for (p, l) in leaves], "; "))"))
        union!(found, hits)
    end
    order = Dict(p => i for (i, (p, _)) in enumerate(leaves))
    return sort!(collect(found); by = t -> (order[t[1]], t[2] != :weight, string(t[2])))
end

target_key(path::AbstractString, name::Symbol) = name == :weight ? String(path) : "$path.$name"
param_array(l, name::Symbol) = getfield(l, name)

# A copy of `layer` with a new weight array (and optionally a new bias), keeping every other field.
with_weight(d::Dense, W, b=d.bias) = Dense(W, b, d.σ)
with_weight(c::Conv, W, b=c.bias) =
    Conv(W, b, c.σ; stride=c.stride, pad=c.pad, dilation=c.dilation, groups=c.groups)
with_weight(c::CrossCor, W, b=c.bias) =
    CrossCor(W, b, c.σ; stride=c.stride, pad=c.pad, dilation=c.dilation)

# Deep copy of a model: every technique starts from this so the input is never mutated.
copy_model(model) = rebuild(model, Any[_copy_layer(l) for (_, l) in walk(model)])
_copy_layer(l::WeightLayer) = with_weight(l, copy(l.weight), l.bias isa AbstractArray ? copy(l.bias) : l.bias)
_copy_layer(l) = deepcopy(l)

"""
    output_axis(W) -> Int

The output-channel axis of a weight: Dense `(out, in)` dim 1, Conv `(kw, kh, cin, cout)` dim 4.
"""
output_axis(W::AbstractMatrix) = 1
output_axis(W::AbstractArray{<:Any,4}) = 4
output_axis(W::AbstractArray) = ndims(W)

function check_fraction(name::AbstractString, x::Real; upper_open::Bool=true)
    ok = isfinite(x) && 0 <= x && (upper_open ? x < 1 : x <= 1)
    ok || throw(ArgumentError("$name must be in [0, 1$(upper_open ? ")" : "]"), got $x"))
    return Float64(x)
end

function check_finite(model)
    for (path, l) in walk(model)
        is_weight_layer(l) || continue
        all(isfinite, l.weight) || throw(ArgumentError("layer $path: weight contains NaN or Inf"))
    end
    return nothing
end
