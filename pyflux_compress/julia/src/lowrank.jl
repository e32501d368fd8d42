# Low-rank factorisation (twin of pfc.lowrank; pyflux_compress/compression/lowrank.py):
# Dense(in => out, σ) with weight W (out × in) -> Dense(in => r; bias=false), Dense(r => out, σ), inline.
#
# Rule, shared with Python:
#   thin SVD of Float64.(W) = U S V' (S descending);
#   rank = nothing: r = smallest r with sum(S[1:r]^2) / sum(S^2) >= energy - 1e-12 (r = 1 when W == 0);
#   rank = an integer: r = min(rank, min(in, out)); rank = Dict(path => r): only the named layers;
#   factorised only where r * (in + out) < in * out;
#   first = sqrt.(S[1:r]) .* V[:, 1:r]' (r × in), no bias, identity;
#   second = U[:, 1:r] .* sqrt.(S[1:r])' (out × r), the original bias and activation; both in W's eltype.
#   Singular-vector signs are implementation-defined (LAPACK builds differ), so parity compares the
#   ranks and the product second * first, not the factors.

using Flux: Dense
using LinearAlgebra: svd, svdvals

"""
    rank_for_energy(S, energy) -> Int

Smallest `r` keeping `energy` of `sum(S .^ 2)` (tolerance 1e-12, as Python's `rank_for_energy`).
"""
function rank_for_energy(S::AbstractVector, energy::Real)
    e = cumsum(Float64.(S) .^ 2)
    e[end] == 0 && return 1
    r = findfirst(>=(energy - 1e-12), e ./ e[end])
    return r === nothing ? length(S) : min(length(S), r)
end

"""
    lowrank(model; rank=nothing, energy=0.95) -> (model, ranks, skipped)

Factorise Dense layers where that saves parameters (rule above). Returns the new model (the two
factors spliced into the enclosing Chain), `ranks`: path => r of the factorised layers, and
`skipped`: path => reason for Dense layers left alone because the rank would not save parameters.
"""
function lowrank(model; rank=nothing, energy::Real=0.95)
    (0 < energy <= 1) || throw(ArgumentError("energy must be in (0, 1], got $energy"))
    rank === nothing || rank isa AbstractDict || rank >= 1 || throw(ArgumentError("rank must be >= 1, got $rank"))
    check_finite(model)
    leaves = Any[]
    ranks = Pair{String,Int}[]
    skipped = Pair{String,String}[]
    for (path, l) in walk(model)
        if !(l isa Dense) || (rank isa AbstractDict && !haskey(rank, path))
            push!(leaves, _copy_layer(l))
            continue
        end
        W = l.weight
        out, in = size(W)
        S = svdvals(Float64.(W))
        r = rank === nothing ? rank_for_energy(S, energy) :
            min(rank isa AbstractDict ? Int(rank[path]) : Int(rank), min(in, out))
        if r * (in + out) >= in * out
            push!(skipped, path => "rank $r would need $(r * (in + out)) weights, not fewer than $(in * out)")
            push!(leaves, _copy_layer(l))
            continue
        end
        F = svd(Float64.(W))
        root = sqrt.(F.S[1:r])
        T = eltype(W)
        first_w = T.(root .* F.Vt[1:r, :])
        second_w = T.(F.U[:, 1:r] .* root')
        push!(leaves, Any[Dense(first_w, false, identity),
                          Dense(second_w, l.bias isa AbstractArray ? copy(l.bias) : l.bias, l.σ)])
        push!(ranks, path => r)
    end
    return rebuild(model, leaves), ranks, skipped
end
