# The kernels the Python bridge calls (pyflux_compress/backends/julia.py, table KERNELS): array-level work
# only. Python validates arguments, builds models and writes records for both backends; these functions take
# arrays and numbers and return arrays, numbers and Tuples/NamedTuples of them. Nothing here builds a layer.
#
# What arrives from Python (PythonCall 0.9 conversion rules, docs/src/conversion-to-julia.md and
# src/Wrap/PyArray.jl of JuliaPy/PythonCall.jl): numpy arrays as `PyArray`s that share NumPy's memory and keep
# NumPy's strides — a C-ordered weight is a strided view, so anything that passes `pointer(A)` to BLAS/LAPACK
# (svd, matrix products, NNlib's im2col convolution) gets `Array(A)` first, a dense column-major copy; Python
# tuples as Julia Tuples; `None` as `nothing`; str as String. What leaves (docs/src/conversion-to-python.md):
# Tuples and Pairs become Python tuples, Arrays become ArrayValues (column-major, read by numpy through
# `__array_interface__`, which BitArray lacks: masks leave as Array{Bool}), NamedTuples attribute-access objects.
# Indices leave 1-based; the Python side subtracts 1.

using Flux: withgradient
using LinearAlgebra: svd, svdvals

"""
    kernel_magnitude_masks(arrays::Tuple, k) -> Tuple of Array{Bool}

Keep-masks pruning the `k` smallest |w| over all `arrays` together (ties in model order; `magnitude_masks`).
"""
kernel_magnitude_masks(arrays::Tuple, k::Integer) =
    Tuple(Array{Bool}(m) for m in magnitude_masks(collect(Any, arrays), k))

"""
    kernel_nm_mask(W, n, m) -> Array{Bool}

`nm_mask` as a plain Bool array.
"""
kernel_nm_mask(W::AbstractArray, n::Integer, m::Integer) = Array{Bool}(nm_mask(W, n, m))

"""
    kernel_select_units(W, axis, n_remove, criterion) -> Vector{Int}

Sorted 1-based indices of the units along dimension `axis` of `W` (the layer's output axis, which Python's layer
registry declares) that stay when the `n_remove` weakest go (`select_units`).
"""
kernel_select_units(W::AbstractArray, axis::Integer, n_remove::Integer, criterion::AbstractString) =
    select_units(W, n_remove, Symbol(criterion); axis)

"""
    kernel_quantize_array(W, bits, scheme, granularity, mask) -> (q, scale, zero_point)

`quantize_array` as a NamedTuple of arrays (`scale`/`zero_point` 0-dimensional per tensor).
"""
function kernel_quantize_array(W::AbstractArray, bits::Integer, scheme::AbstractString,
                               granularity::AbstractString, mask)
    qw = quantize_array(W; bits, scheme=Symbol(scheme), granularity=Symbol(granularity), mask)
    return (q=qw.q, scale=qw.scale, zero_point=qw.zero_point)
end

"""
    kernel_dequantize_array(q, scale, zero_point) -> Array{Float32}

`dequantize_array` of the integer weight `q` with a 0-dimensional (per tensor) or per-channel scale.
"""
function kernel_dequantize_array(q::AbstractArray, scale::AbstractArray, zero_point::AbstractArray)
    granularity = ndims(scale) == 0 ? :per_tensor : :per_channel
    qw = QuantizedWeight(Array{Int8}(q), Array{Float32}(scale), Array{Int32}(zero_point), 8, :symmetric,
                         granularity)
    return dequantize_array(qw)
end

"""
    kernel_kmeans_1d(values, k, max_iter) -> (centroids::Vector{Float32}, labels (1-based), iterations)
"""
kernel_kmeans_1d(values::AbstractVector, k::Integer, max_iter::Integer) = kmeans_1d(values, k; max_iter)

"""
    kernel_svd(W) -> (U, S, Vt)

Thin SVD in Float64 of a dense copy of `W` (LAPACK needs column-major memory; `W` may be a strided PyArray).
"""
function kernel_svd(W::AbstractMatrix)
    F = svd(Array{Float64}(W))
    return (F.U, F.S, F.Vt)
end

"""
    kernel_singular_values(W) -> Vector{Float64}
"""
kernel_singular_values(W::AbstractMatrix) = svdvals(Array{Float64}(W))

"""
    kernel_distill_loss_grad(zs, pt, y, T, alpha, kind) -> (loss, dloss/dzs)

`distill_loss` and its gradient with respect to the student logits `zs` (classes × N) in one forward pass
(`Flux.withgradient`, which returns `(val, grad)`; Flux 0.14-0.16 `src/gradient.jl` / Zygote). `y`: 1-based labels
or `nothing`.
"""
function kernel_distill_loss_grad(zs::AbstractMatrix, pt::AbstractMatrix, y, T::Real, alpha::Real,
                                  kind::AbstractString)
    z, p = Array(zs), Array(pt)
    labels = y === nothing ? nothing : Vector{Int}(y)
    r = withgradient(s -> distill_loss(s, p, labels; temperature=T, alpha, loss=Symbol(kind)), z)
    return (r.val, r.grad[1])
end

"""
    TrainSession

What `kernel_train_step` keeps between steps for one Python optimiser: the model rebuilt from `arch`, the
parameter paths it loads, the optimiser rule and its `Optimisers.setup` state. Python holds the session (an
opaque value) and passes it back; a different `arch`, path list or rule starts a new one.
"""
mutable struct TrainSession
    arch::String
    names::Vector{String}
    rule::Tuple
    model::Any
    state::Any
end

"""
    kernel_train_step(session, arch, names, arrays, x, y, loss, rule) -> (session, loss, ŷ, arrays)

One training step of the model written `arch` in Flux syntax (`model_from_arch`, built once per session):
copy `arrays` into the model's fields at the Julia paths `names` (`"layers[2].weight"`, `"layers[3].μ"`: the
Python layers' arrays have the Flux fields' shapes, so an element-wise copy is the right one whatever the
PyArray's strides), take `Flux.withgradient` of the named `Flux.Losses` loss on the batch `x` (features ×
batch, or W×H×C×N) against `y` (1-based labels, one-hot over the output's first dim, or a target array), and
`Optimisers.update!` with `rule = (kind, lr, β1, β2, ϵ, momentum, nesterov, weight_decay)` (`optimiser_rule`).
Dropout/BatchNorm are in training mode inside `withgradient` (Flux's automatic mode); BatchNorm's running
statistics are updated and returned with the rest. Returns the session, the loss, the model output and the new
arrays in the order of `names`. The model output comes out of the same forward pass: the differentiated
function returns `(loss=…, out=…)`, and `withgradient` takes the gradient of the first field and returns the whole
value (Zygote.jl PR #1419, merged 2023; documented in Flux 0.16's `withgradient`; an older Zygote would reject
the NamedTuple, so the resolved Zygote must include it).
"""
function kernel_train_step(session, arch::AbstractString, names::Tuple, arrays::Tuple, x::AbstractArray, y,
                           loss::AbstractString, rule::Tuple)
    paths = collect(String, names)
    if !(session isa TrainSession) || session.arch != arch || session.names != paths || session.rule != rule
        model = model_from_arch(arch)
        kind, lr, b1, b2, eps, momentum, nesterov, wd = rule
        opt = optimiser_rule(kind; lr, beta=(b1, b2), eps, momentum, nesterov, weight_decay=wd)
        session = TrainSession(String(arch), paths, rule, model, setup(opt, model))
    end
    model = session.model
    for (path, a) in zip(paths, arrays)
        dest = field_at(model, path)
        size(dest) == size(a) ||
            throw(DimensionMismatch("train_step: $path is $(size(a)) in Python but $(size(dest)) in $arch"))
        dest .= a
    end
    lossf = train_loss(loss)
    xb = Array{Float32}(x)
    r = withgradient(model) do m
        out = m(xb)
        (loss=lossf(out, train_target(y, out)), out=out)
    end
    session.state, session.model = update!(session.state, model, r.grad[1])
    return (session, r.val.loss, r.val.out, Tuple(Array(field_at(session.model, p)) for p in paths))
end

const _TRAIN_LOSSES = Dict("crossentropy" => Flux.Losses.crossentropy,
                           "logitcrossentropy" => Flux.Losses.logitcrossentropy, "mse" => Flux.Losses.mse,
                           "kldivergence" => Flux.Losses.kldivergence,
                           "binarycrossentropy" => Flux.Losses.binarycrossentropy)

train_loss(name::AbstractString) = get(_TRAIN_LOSSES, name) do
    throw(ArgumentError("train_step: unknown loss \"$name\"; known: $(join(sort!(collect(keys(_TRAIN_LOSSES))), ", "))"))
end

# Int labels (1-based): one-hot over the output's class dim (Flux dims=1); a single output unit takes the
# labels 0/1 themselves as targets (pfc.losses' binarycrossentropy rule). Arrays: the targets as they are.
train_target(y::AbstractVector{<:Integer}, out) =
    size(out, 1) == 1 ? reshape(Float32.(y .- 1), 1, :) : Float32.(onehotbatch(y, 1:size(out, 1)))
train_target(y::AbstractArray, out) = Array{Float32}(y)

"""
    field_at(model, path) -> array

The field at a Julia property path relative to `model`: `"layers[2].weight"` is `model.layers[2].weight`.
"""
function field_at(model, path::AbstractString)
    x = model
    for seg in split(path, '.')
        m = match(r"^([^\[\]]+)((?:\[\d+\])*)$", seg)
        m === nothing && throw(ArgumentError("train_step: bad path \"$path\""))
        x = getproperty(x, Symbol(m[1]))
        for i in eachmatch(r"\[(\d+)\]", m[2])
            x = x[parse(Int, i[1])]
        end
    end
    return x
end
