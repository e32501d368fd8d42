# Article snippet 1, "权重剪枝" (weight pruning), as runnable Flux code.
#
# The article wrote `model[1].w` (Flux's field is `weight` since 0.13) and `pruned_weights . model[1].w`
# (the broadcast product `.*`). Flux layers are immutable structs, so instead of assigning a field we
# build the layer again with the masked weight (or copy into the array in place: `W .= W .* mask`).
# With FluxCompress the same is `prune(model, sparsity; scope=:layer)` (exact sparsity, masks returned).

using Flux: Chain, Dense, relu
using FluxCompress: prune, sparsity

model = Chain(Dense(784 => 128, relu), Dense(128 => 64, relu), Dense(64 => 10))

# importance of each weight = its magnitude
weights_importance = abs.(model[1].weight)
# threshold, as in the article
threshold = 0.1f0
# keep-mask: true where the weight matters
pruned_weights = weights_importance .> threshold
# the article's `model[1].w = pruned_weights . model[1].w`: multiply element-wise, in place
model[1].weight .= pruned_weights .* model[1].weight
println("layer 1 sparsity after thresholding at $threshold: ", round(count(iszero, model[1].weight) / length(model[1].weight); digits=3))

# the same idea with an exact target sparsity, on every layer, without touching `model`
pruned, masks = prune(model, 0.9; scope=:global)
println("global 90% magnitude pruning: ", sparsity(pruned))
