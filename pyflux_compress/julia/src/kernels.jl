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
