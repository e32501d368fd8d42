# Article snippet 3, "稀疏化" (sparsification), as runnable Flux code.
#
# `model[1].w = sparsity_level . model[1].w` taken literally multiplies every weight by 0.5, which makes
# nothing sparse. The text says sparsification sets weights to 0 to reach a level, so we read it as: zero
# the `sparsity_level` fraction of smallest-magnitude weights of layer 1 (and, with FluxCompress, of every
# layer, or in the semi-structured 2:4 pattern).

using Flux: Chain, Dense, relu
using FluxCompress: sparsify, sparsity

model = Chain(Dense(784 => 128, relu), Dense(128 => 64, relu), Dense(64 => 10))

sparsity_level = 0.5
W = model[1].weight
k = round(Int, sparsity_level * length(W))
smallest = partialsortperm(vec(abs.(W)), 1:k)       # the k smallest |w|
W[smallest] .= 0                                     # in place: model[1] now holds the zeros
println("layer 1 sparsity: ", count(iszero, W) / length(W))

half, _ = sparsify(model, 0.5)                       # every layer, exact per layer
two_four, _ = sparsify(model; pattern="2:4")         # at most 2 nonzeros in every 4 consecutive inputs
println(sparsity(half))
println(sparsity(two_four))
