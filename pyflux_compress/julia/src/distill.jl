# Knowledge distillation (twin of pfc.distill): Hinton et al. (2015) and the article's MSE variant.
#
# Losses, shared with Python (compression/distill.py); logits are (classes, N), columns are samples;
# a trailing `softmax` layer of a teacher or of the student is dropped to get logits:
#   soft targets  p_t = Float32(mean over teachers of softmax(Float64(z_t) / T))   (ensemble = averaged)
#   :kl           L_soft = T^2 * mean_n sum_c p_t * (log p_t - logsoftmax(z_s / T))   (0 log 0 = 0)
#   :mse          L_soft = mean((z_s - p_t)^2)          (the article: Flux.mse(small_output, softmax(...)))
#   with labels y L = alpha * L_soft + (1 - alpha) * logitcrossentropy(z_s, onehot(y)); otherwise L = L_soft
# Training: Optimisers.setup(rule, student) and Optimisers.update! (what Flux.setup / Flux.update! wrap;
# `optimiser_rule` builds the twin of pfc.Adam / pfc.SGD); after each step the student's pruning masks are
# re-applied. The batches (index vectors, 1-based) may be given so that the Python bridge reproduces
# numpy's shuffling exactly.

using Flux: Chain, softmax, logsoftmax, onehotbatch, logitcrossentropy, withgradient
using Optimisers: Adam, Descent, Momentum, Nesterov, OptimiserChain, WeightDecay, setup, update!
using Random: Xoshiro, randperm

"""
    optimiser_rule(kind; lr, beta=(0.9, 0.999), eps=1e-8, momentum=0.0, nesterov=false, weight_decay=0.0)

The Optimisers.jl rule equal to pyflux_compress's `Adam(...)` (`kind = :adam`) or `SGD(...)` (`:sgd`:
Descent, Momentum or Nesterov); coupled weight decay = `OptimiserChain(WeightDecay(λ), rule)`.
"""
function optimiser_rule(kind::Union{Symbol,AbstractString}; lr::Real, beta=(0.9, 0.999), eps::Real=1e-8,
                        momentum::Real=0.0, nesterov::Bool=false, weight_decay::Real=0.0)
    kind = Symbol(kind)
    rule = if kind == :adam
        Adam(lr, (beta[1], beta[2]), eps)
    elseif kind == :sgd
        momentum == 0 ? Descent(lr) : nesterov ? Nesterov(lr, momentum) : Momentum(lr, momentum)
    else
        throw(ArgumentError("optimiser kind must be :adam or :sgd, got :$kind"))
    end
    return weight_decay == 0 ? rule : OptimiserChain(WeightDecay(weight_decay), rule)
end

# The model without a trailing softmax layer (distillation softens logits itself).
function logits_model(model)
    model isa Chain || return model
    layers = _layers(model)
    return !isempty(layers) && layers[end] === softmax ? Chain(layers[1:end-1]...) : model
end

_xlogx(p) = iszero(p) ? zero(p) : p * log(p)

"""
    soft_targets(teacher_logits, T) -> Matrix

Average of `softmax(z / T)` over the teachers' logits (one matrix or a vector of matrices).
"""
soft_targets(z::AbstractMatrix, T::Real) = Float32.(softmax(Float64.(z) ./ T; dims=1))
soft_targets(zs::AbstractVector{<:AbstractMatrix}, T::Real) =
    Float32.(sum(z -> softmax(Float64.(z) ./ T; dims=1), zs) ./ length(zs))

"""
    distill_loss(student_logits, targets, y=nothing; temperature=4, alpha=0.9, loss=:kl) -> scalar

The loss above; `targets` are the soft targets `p_t` (see `soft_targets`), `y` 1-based class labels
or `nothing`.
"""
function distill_loss(zs::AbstractMatrix, pt::AbstractMatrix, y=nothing; temperature::Real=4.0,
                      alpha::Real=0.9, loss::Symbol=:kl)
    T = eltype(zs)(temperature)
    soft = if loss == :kl
        n = size(zs, 2)
        T^2 * (sum(_xlogx, pt) - sum(pt .* logsoftmax(zs ./ T; dims=1))) / n
    elseif loss == :mse
        sum(abs2, zs .- pt) / length(zs)
    else
        throw(ArgumentError("loss must be :kl or :mse, got :$loss"))
    end
    y === nothing && return soft
    hard = logitcrossentropy(zs, onehotbatch(y, 1:size(zs, 1)))
    return alpha * soft + (1 - alpha) * hard
end

"""
    distill(teacher, student, X, y=nothing; temperature=4.0, alpha=0.9, loss=:kl, epochs=5,
            batchsize=128, opt=Adam(1e-3), batches=nothing, seed=0, masks=nothing) -> (student, losses)

Train a copy of `student` on the soft targets of `teacher` (a model or a vector of models) for inputs
`X` (features × N, or W×H×C×N); `y`: 1-based labels or `nothing`. `batches`: vector (per epoch) of
vectors of 1-based sample-index vectors; when `nothing` they are `randperm` chunks of `batchsize` from
`Xoshiro(seed)`. `masks`: `key => keep-mask` of the student (re-applied after every step).
Returns the trained copy and the mean loss of every epoch.
"""
function distill(teacher, student, X::AbstractArray, y=nothing; temperature::Real=4.0, alpha::Real=0.9,
                 loss::Union{Symbol,AbstractString}=:kl, epochs::Integer=5, batchsize::Integer=128,
                 opt=Adam(1e-3), batches=nothing, seed::Integer=0, masks=nothing)
    loss = Symbol(loss)
    loss in (:kl, :mse) || throw(ArgumentError("loss must be :kl or :mse, got :$loss"))
    (0 <= alpha <= 1) || throw(ArgumentError("alpha must be in [0, 1], got $alpha"))
    temperature > 0 || throw(ArgumentError("temperature must be > 0, got $temperature"))
    X isa Array || (X = Array(X))        # e.g. a zero-copy PyArray view from Python: one dense copy for training
    n = size(X, ndims(X))
    teachers = teacher isa AbstractVector ? teacher : [teacher]
    pt_all = soft_targets([logits_model(t)(X) for t in teachers], temperature)
    model = logits_model(copy_model(student))
    state = setup(opt, model)
    if batches === nothing
        rng = Xoshiro(seed)
        batches = [collect(Iterators.partition(randperm(rng, n), batchsize)) for _ in 1:epochs]
    end
    length(batches) == epochs || throw(ArgumentError("batches must hold one entry per epoch ($epochs)"))
    losses = Float64[]
    for epoch_batches in batches
        total = 0.0
        for idx in epoch_batches
            xb = selectdim(X, ndims(X), idx)
            pb = pt_all[:, idx]
            yb = y === nothing ? nothing : y[idx]
            # one forward pass gives the loss and the gradient (with Dropout, the reported loss is the one
            # trained on): Flux.withgradient returns (val, grad)
            l, g = withgradient(m -> distill_loss(m(xb), pb, yb; temperature, alpha, loss), model)
            update!(state, model, g[1])
            masks === nothing || mask_in_place!(model, masks)
            total += l * length(idx)
        end
        push!(losses, total / n)
    end
    # put a trailing softmax of the student back
    trained = logits_model(student) === student ? model : Chain(_layers(model)..., softmax)
    return trained, losses
end

# Zero masked entries of the model's own (copied) arrays in place, keeping the optimiser state valid.
function mask_in_place!(model, masks)
    bypath = Dict(walk(model))
    for (key, m) in masks
        key = String(key)
        path, name = endswith(key, ".bias") ? (key[1:end-5], :bias) : (key, :weight)
        getfield(bypath[path], name) .*= m
    end
    return model
end
