# Sparsity and parameter counts (twins of pfc.sparsity / pfc.count_params).

using Flux: BatchNorm

# Trainable arrays of a leaf, in Flux field order (the same arrays Python's `Layer.params()` returns).
trainable_arrays(l::WeightLayer) = l.bias isa AbstractArray ? [l.weight, l.bias] : [l.weight]
trainable_arrays(l::BatchNorm) = l.affine ? [l.β, l.γ] : AbstractArray[]
trainable_arrays(l) = AbstractArray[]

"""
    sparsity(model; include=nothing) -> (total = Float64, per_layer = Vector{Pair{String,Float64}})

Fraction of exactly-zero entries of the targets of `prunable(model, include)` (by default the
Dense/Conv/CrossCor weights, biases excluded), per target key and over all of them (size-weighted).
"""
function sparsity(model; include=nothing)
    bypath = Dict(walk(model))
    per = Pair{String,Float64}[]
    zeros_total = 0
    n_total = 0
    for (p, name) in prunable(model, include)
        A = param_array(bypath[p], name)
        z = count(iszero, A)
        push!(per, target_key(p, name) => (isempty(A) ? 0.0 : 1.0 - count(!iszero, A) / length(A)))
        zeros_total += z
        n_total += length(A)
    end
    return (total = n_total == 0 ? 0.0 : zeros_total / n_total, per_layer = per)
end

"""
    count_params(model; nonzero=true) -> (total = Int, per_layer = Vector{Pair{String,Int}})

Number of trainable parameters (weights, biases, BatchNorm β/γ) per leaf layer and in total;
with `nonzero=true` only the entries that are not exactly zero.
"""
function count_params(model; nonzero::Bool=true)
    per = Pair{String,Int}[]
    for (path, l) in walk(model)
        arrays = trainable_arrays(l)
        isempty(arrays) && continue
        n = nonzero ? sum(a -> count(!iszero, a), arrays) : sum(length, arrays)
        push!(per, path => n)
    end
    return (total = isempty(per) ? 0 : sum(last, per), per_layer = per)
end
