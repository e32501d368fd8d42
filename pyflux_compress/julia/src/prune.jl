# Magnitude pruning (twin of pfc.prune / pfc.PolynomialDecay; pyflux_compress/compression/prune.py).
#
# Exact rule, shared with Python:
#   k = min(n, floor(sparsity * n + 0.5))   (round half UP; n = number of candidate entries)
#   candidates in "model order": targets in walk order, and inside an array numpy's C order of the
#   same-shaped array (last index fastest; see `corder`). scope=:layer: each array alone;
#   scope=:global: all targets concatenated in that order.
#   the k smallest |w| are pruned; among entries equal to the k-th smallest magnitude, the first in
#   model order are pruned (= a stable ascending sort of |w| in model order, first k pruned).
# So the mask is fully determined by the weights: bit-identical on both backends.

"""
    n_to_prune(sparsity, n) -> Int

`min(n, floor(sparsity * n + 0.5))`: round half up, as Python's `n_to_prune`.
"""
n_to_prune(sparsity::Real, n::Integer) = min(n, floor(Int, Float64(sparsity) * n + 0.5))

"""
    magnitude_masks(arrays, k) -> Vector{BitArray}

Keep-masks (true = kept) pruning the `k` smallest |w| over all `arrays` together, ties in model order.
"""
function magnitude_masks(arrays::AbstractVector, k::Integer)
    masks = [trues(size(A)) for A in arrays]
    k <= 0 && return masks
    mags = reduce(vcat, [Float64.(abs.(corder(A))) for A in arrays]; init=Float64[])
    # positions back to (array, Julia linear index)
    owner = reduce(vcat, [fill(j, length(A)) for (j, A) in enumerate(arrays)]; init=Int[])
    lin = reduce(vcat, [corder_index(A) for A in arrays]; init=Int[])
    order = sortperm(mags; alg=Base.Sort.MergeSort)          # stable: ties stay in model order
    for p in order[1:k]
        masks[owner[p]][lin[p]] = false
    end
    return masks
end

"""
    magnitude_mask(W, sparsity) -> BitArray

One array: prune `n_to_prune(sparsity, length(W))` smallest |W| (ties: first in C order).
"""
magnitude_mask(W::AbstractArray, sparsity::Real) =
    magnitude_masks([W], n_to_prune(check_fraction("sparsity", sparsity), length(W)))[1]

"""
    prune(model, sparsity; scope=:layer, include=nothing) -> (model, masks)

Zero the smallest-magnitude entries of the targets (`prunable(model, include)`; by default every
Dense/Conv/CrossCor weight, never biases) — each array to `sparsity` (`scope=:layer`) or all together
(`scope=:global`). Returns the pruned copy and `masks`: `target key => BitArray` (key = layer path for
weights, `"path.bias"` otherwise; true = kept).
"""
function prune(model, sparsity::Real; scope::Union{Symbol,AbstractString}=:layer, include=nothing)
    sparsity = check_fraction("sparsity", sparsity)
    scope = Symbol(scope)
    scope in (:layer, :global) || throw(ArgumentError("scope must be :layer or :global, got :$scope"))
    targets = prunable(model, include)
    isempty(targets) && throw(ArgumentError("model has no prunable weights (Dense/Conv/CrossCor)"))
    check_finite(model)
    bypath = Dict(walk(model))
    arrays = [param_array(bypath[p], name) for (p, name) in targets]
    masks = if scope == :layer
        [magnitude_masks([A], n_to_prune(sparsity, length(A)))[1] for A in arrays]
    else
        magnitude_masks(arrays, n_to_prune(sparsity, sum(length, arrays)))
    end
    named = [target_key(p, name) => m for ((p, name), m) in zip(targets, masks)]
    return apply_masks(model, named), named
end

"""
    apply_masks(model, masks) -> new model

`masks`: `key => mask` pairs (key `"layers[1]"` for a weight, `"layers[1].bias"` for a bias); each named
array is multiplied by its mask (`W .* mask`, the broadcast the article writes `pruned_weights . w`).
"""
function apply_masks(model, masks)
    bykey = Dict{String,Any}(String(k) => m for (k, m) in masks)
    leaves = Any[]
    for (path, l) in walk(model)
        if is_weight_layer(l)
            W = get(bykey, path, nothing)
            b = get(bykey, "$path.bias", nothing)
            W === nothing || size(W) == size(l.weight) ||
                throw(DimensionMismatch("mask for $path has size $(size(W)), weight has $(size(l.weight))"))
            newW = W === nothing ? copy(l.weight) : l.weight .* W
            newb = l.bias isa AbstractArray ? (b === nothing ? copy(l.bias) : l.bias .* b) : l.bias
            push!(leaves, with_weight(l, newW, newb))
        else
            push!(leaves, _copy_layer(l))
        end
    end
    return rebuild(model, leaves)
end

"""
    polynomial_decay(step; initial, final, begin_step, end_step) -> Float64

Target sparsity of Zhu & Gupta (2017) at optimiser `step` (twin of `PolynomialDecay.sparsity_at`):
`final + (initial - final) * (1 - t)^3`, `t = clamp((step - begin_step) / (end_step - begin_step), 0, 1)`.
"""
function polynomial_decay(step::Integer; initial::Real, final::Real, begin_step::Integer, end_step::Integer)
    end_step > begin_step || throw(ArgumentError("end_step must be > begin_step"))
    t = clamp((step - begin_step) / (end_step - begin_step), 0.0, 1.0)
    return final + (initial - final) * (1.0 - t)^3
end

"""
    pruning_due(step; begin_step, end_step, frequency) -> Bool

Whether `step` is a pruning event of the schedule (twin of `PolynomialDecay.due`).
"""
pruning_due(step::Integer; begin_step::Integer, end_step::Integer, frequency::Integer) =
    begin_step <= step <= end_step && ((step - begin_step) % frequency == 0 || step == end_step)
