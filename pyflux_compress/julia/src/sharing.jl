# Weight sharing (twin of pfc.share_weights; pyflux_compress/compression/sharing.py): Deep Compression's
# k-means over each layer's nonzero weights.
#
# Rule, shared with Python:
#   values v = the layer's weights that are nonzero (and kept by its pruning mask), in numpy C order;
#   k = clamp(2^bits, 1, length(v)); centroids c = linspace(min(v), max(v), k) in Float64 (numpy's formula:
#   lo + (j - 1) * step with step = (hi - lo) / (k - 1), and c[k] = hi);
#   each iteration (at most 100): label = searchsorted_left(midpoints(c), v) (a value on a midpoint goes
#   to the lower cluster); sums and counts accumulate in v's order (bit-identical Float64 sums); non-empty
#   clusters move to sum / count; stop after an iteration whose labels equal the previous ones (from the
#   2nd); otherwise re-sort the centroids (stable) and relabel;
#   codebook = Float32.(c); final labels against the midpoints of Float64.(codebook).
#   The shared weight is codebook[label] where kept, exactly 0 elsewhere.

const MAX_ITER = 100

"""
    kmeans_1d(values, k; max_iter=100) -> (centroids::Vector{Float32}, labels::Vector{Int}, iterations)

Linear-initialised 1-D k-means (rule above); `labels` are 1-based; centroids sorted ascending.
"""
function kmeans_1d(values::AbstractVector, k::Integer; max_iter::Integer=MAX_ITER)
    v = Float64.(values)
    isempty(v) && throw(ArgumentError("kmeans_1d needs at least one value"))
    k = max(1, min(k, length(v)))
    lo, hi = minimum(v), maximum(v)
    c = k == 1 ? [lo] : [j == k ? hi : lo + (j - 1) * ((hi - lo) / (k - 1)) for j in 1:k]
    labels = zeros(Int, length(v))
    it = 0
    for i in 1:max_iter
        it = i
        mids = (c[2:end] .+ c[1:end-1]) ./ 2
        new = [searchsortedfirst(mids, x) for x in v]        # = numpy searchsorted(side="left") + 1
        counts = zeros(Int, k)
        sums = zeros(Float64, k)
        for (x, j) in zip(v, new)
            counts[j] += 1
            sums[j] += x
        end
        cnew = [counts[j] > 0 ? sums[j] / counts[j] : c[j] for j in 1:k]
        done = i > 1 && new == labels
        labels, c = new, cnew
        done && break
        order = sortperm(c; alg=Base.Sort.MergeSort)
        if order != 1:k
            c = c[order]
            labels = invperm(order)[labels]
        end
    end
    c32 = Float32.(c)
    mids = (Float64.(c32[2:end]) .+ c32[1:end-1]) ./ 2
    labels = [searchsortedfirst(mids, x) for x in v]
    return c32, labels, it
end

"""
    share_weights(model; bits=5, masks=nothing) -> (model, books)

Replace every Dense/Conv/CrossCor weight by its k-means codebook values (pruned weights stay 0).
`bits`: 1..16 or a Dict path => bits (`nothing`/absent = stays float). `masks`: path => keep-mask from
pruning. Returns the new float model and `path => (centroids::Vector{Float32}, index::Array{Int},
mask::BitArray)`: `index` is 0-based like Python's (0 where pruned), `mask` true = kept.
"""
function share_weights(model; bits=5, masks=nothing)
    check_finite(model)
    maskd = masks === nothing ? Dict{String,Any}() : Dict{String,Any}(String(k) => v for (k, v) in masks)
    leaves = Any[]
    books = Pair{String,Tuple{Vector{Float32},Array{Int},BitArray}}[]
    for (path, l) in walk(model)
        b = bits isa AbstractDict ? get(bits, path, nothing) : bits
        if !is_weight_layer(l) || b === nothing
            push!(leaves, _copy_layer(l))
            continue
        end
        (1 <= b <= 16) || throw(ArgumentError("bits must be in 1..16, got $b"))
        W = l.weight
        keep = BitArray(W .!= 0)
        haskey(maskd, path) && (keep .&= Bool.(maskd[path]))
        index = zeros(Int, size(W))
        pos = [i for i in corder_index(W) if keep[i]]          # kept positions in C order
        centroids = if isempty(pos)
            zeros(Float32, 1)
        else
            c, lab, _ = kmeans_1d(W[pos], 2^b)
            index[pos] = lab .- 1
            c
        end
        newW = zeros(eltype(W), size(W))
        newW[keep] = eltype(W).(centroids[index[keep] .+ 1])
        push!(books, path => (centroids, index, keep))
        push!(leaves, with_weight(l, newW, l.bias isa AbstractArray ? copy(l.bias) : l.bias))
    end
    return rebuild(model, leaves), books
end
