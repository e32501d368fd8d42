# Structured pruning (twin of pfc.prune_structured): remove whole Dense neurons (rows) and Conv
# filters physically, and the matching inputs of the next weight layer.
#
# Rule, shared with Python (compression/structured.py):
#   * every Dense/Conv/CrossCor "producer" that feeds another weight layer (the "consumer") through only
#     activations, Dropout, MaxPool/MeanPool/GlobalMeanPool, BatchNorm and flatten loses
#     k = floor(fraction * out + 0.5) output units (round half up); k >= out is an error. Producers left
#     alone (with the reason, as in Python's record): the last weight layer; one followed by any other
#     layer; a grouped Conv; a Conv reaching a Dense without a flatten; a Dense feeding a Conv; a flatten
#     between two Convs;
#   * scores are computed on the ORIGINAL weights: l1 = sum |w|, l2 = sqrt(sum w^2) over the unit's
#     inputs (Dense row W[o, :]; Conv filter W[:, :, :, o]);
#   * the k lowest scores go; ties: lower unit index first (stable sort); kept units keep their order;
#   * the removal follows the data forward through activations, Dropout, pooling (channels unchanged),
#     BatchNorm (its β, γ, μ, σ² are sliced) and `flatten`: a Conv channel c of a (W, H, C) feature
#     map becomes Dense input columns c*W*H+1 : (c+1)*W*H (column-major flatten of WHCN), W*H inferred
#     as in ÷ C of that Dense;
#   * the next weight layer loses the matching inputs (Dense columns, Conv input channels).

using Flux: BatchNorm, Dense, Conv, CrossCor, MaxPool, MeanPool, GlobalMeanPool, Dropout, flatten

"""
    unit_scores(W, criterion) -> Vector{Float64}

Importance of each output unit of `W` (Dense rows, Conv dim 4): `:l1` or `:l2` norm of its weights.
"""
function unit_scores(W::AbstractArray, criterion::Symbol; axis::Integer=output_axis(W))
    ax = axis
    other = Tuple(d for d in 1:ndims(W) if d != ax)
    s = criterion == :l1 ? sum(abs.(Float64.(W)); dims=other) :
        criterion == :l2 ? sqrt.(sum(abs2.(Float64.(W)); dims=other)) :
        throw(ArgumentError("criterion must be :l1 or :l2, got :$criterion"))
    return vec(s)
end

"""
    select_units(W, n_remove, criterion; axis=output_axis(W)) -> Vector{Int}

Sorted 1-based indices of the units along `axis` that stay when the `n_remove` lowest scores go (ties: the
lower index goes first, a stable sort). Twin of Python's kernel `select_units` (compression/structured.py).
"""
function select_units(W::AbstractArray, n_remove::Integer, criterion::Symbol; axis::Integer=output_axis(W))
    order = sortperm(unit_scores(W, criterion; axis); alg=Base.Sort.MergeSort)   # weakest first, ties by index
    return sort(order[n_remove+1:end])
end

"""
    kept_units(W, fraction, criterion, path) -> Vector{Int}

Sorted 1-based indices of the output units that stay (see the rule above).
"""
function kept_units(W::AbstractArray, fraction::Real, criterion::Symbol, path::AbstractString)
    out = size(W, output_axis(W))
    k = floor(Int, Float64(fraction) * out + 0.5)
    k < out || throw(ArgumentError("fraction=$fraction would remove all $out units of $path"))
    return select_units(W, k, criterion)
end

# Kinds of leaves between a producer and its consumer, as Python's `_kind`.
function _kind(l)
    is_flatten(l) && return :flatten
    l isa WeightLayer && return :producer
    l isa BatchNorm && return :batchnorm
    l isa Union{MaxPool,MeanPool,GlobalMeanPool,Dropout} && return :channelwise
    l isa Function && return :activation
    return :other
end

"""
    structured_plan(model, fraction, criterion) -> (plans, skipped)

Decide on the unmodified weights which units each producer keeps. `plans`: NamedTuples
`(path, producer, between, consumer, keep, block, units)` (indices into `walk(model)`); `skipped`:
`path => reason` for the producers left alone (same reasons as Python's record).
"""
function structured_plan(model, fraction::Real, criterion::Symbol)
    items = walk(model)
    producers = [i for (i, (_, l)) in enumerate(items) if _kind(l) == :producer]
    plans = NamedTuple[]
    skipped = Pair{String,String}[]
    for (n, pi) in enumerate(producers)
        path, layer = items[pi]
        if n == length(producers)
            push!(skipped, path => "last weight layer: its outputs are the model's outputs")
            continue
        end
        ci = producers[n+1]
        between = collect(pi+1:ci-1)
        kinds = [_kind(last(items[i])) for i in between]
        odd = [first(items[i]) for (i, k) in zip(between, kinds) if k == :other]
        if !isempty(odd)
            push!(skipped, path => "followed by $(join(odd, ", ")), which structured pruning cannot see through")
            continue
        end
        if layer isa Conv && layer.groups != 1
            push!(skipped, path => "grouped convolution")
            continue
        end
        consumer = last(items[ci])
        units = size(layer.weight, output_axis(layer.weight))
        block = 1
        if ndims(layer.weight) == 4 && ndims(consumer.weight) == 2
            if !(:flatten in kinds)
                push!(skipped, path => "Conv output reaches $(first(items[ci])) (Dense) without a flatten")
                continue
            end
            block, rem = divrem(size(consumer.weight, 2), units)
            if rem != 0
                push!(skipped, path => "$(first(items[ci])) inputs not a multiple of the $units channels")
                continue
            end
        elseif ndims(layer.weight) == 2 && ndims(consumer.weight) == 4
            push!(skipped, path => "Dense feeding a Conv")
            continue
        elseif ndims(layer.weight) == 4 && :flatten in kinds
            push!(skipped, path => "flatten between two convolutions")
            continue
        end
        keep = kept_units(layer.weight, fraction, criterion, path)
        push!(plans, (path=path, producer=pi, between=between, consumer=ci, keep=keep, block=block, units=units))
    end
    return plans, skipped
end

slice_out(l::Dense, keep) = Dense(l.weight[keep, :], l.bias isa AbstractArray ? l.bias[keep] : l.bias, l.σ)
slice_out(l::Union{Conv,CrossCor}, keep) =
    with_weight(l, l.weight[:, :, :, keep], l.bias isa AbstractArray ? l.bias[keep] : l.bias)
slice_in(l::Dense, cols) = Dense(l.weight[:, cols], l.bias, l.σ)
slice_in(l::Union{Conv,CrossCor}, chans) = with_weight(l, l.weight[:, :, chans, :], l.bias)

# BatchNorm is a mutable struct with fields β, γ (`nothing` when affine=false), μ, σ² (`nothing` when
# track_stats=false) and chs (Flux 0.14-0.16 src/layers/normalise.jl); only the arrays present are sliced.
_slice(x::AbstractArray, keep) = x[keep]
_slice(::Nothing, keep) = nothing

function slice_batchnorm(bn::BatchNorm, keep)
    new = deepcopy(bn)
    new.β = _slice(bn.β, keep); new.γ = _slice(bn.γ, keep)
    new.μ = _slice(bn.μ, keep); new.σ² = _slice(bn.σ², keep)
    new.chs = length(keep)
    return new
end

"""
    prune_structured(model, fraction; criterion=:l1) -> (model, kept, skipped)

Remove `fraction` of the output units of every producer (see the rule above), physically.
Returns the smaller model, `kept::Vector{Pair{String,Vector{Int}}}` (1-based indices of the units that
stay, per shrunk layer) and `skipped::Vector{Pair{String,String}}` (producers left alone, with why).
"""
function prune_structured(model, fraction::Real; criterion::Union{Symbol,AbstractString}=:l1)
    fraction = check_fraction("fraction", fraction)
    criterion = Symbol(criterion)
    criterion in (:l1, :l2) || throw(ArgumentError("criterion must be :l1 or :l2, got :$criterion"))
    check_finite(model)
    plans, skipped = structured_plan(model, fraction, criterion)
    new = Any[_copy_layer(l) for (_, l) in walk(model)]
    for plan in plans
        keep = plan.keep
        new[plan.producer] = slice_out(new[plan.producer], keep)
        for i in plan.between
            new[i] isa BatchNorm && (new[i] = slice_batchnorm(new[i], keep))
        end
        consumer = new[plan.consumer]
        if consumer isa Dense
            b = plan.block
            cols = reduce(vcat, [((c - 1) * b + 1):(c * b) for c in keep]; init=Int[])   # channel c -> its block
            new[plan.consumer] = slice_in(consumer, cols)
        else
            new[plan.consumer] = slice_in(consumer, keep)
        end
    end
    return rebuild(model, new), [p.path => p.keep for p in plans], skipped
end
