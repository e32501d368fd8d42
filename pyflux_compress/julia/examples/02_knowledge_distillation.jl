# Article snippet 2, "知识蒸馏" (knowledge distillation), as runnable Flux code.
#
# The article computes `loss = Flux.mse(small_output, softmax(large_output))` for some input `x` that it
# never defines; here `x` is a random batch of 784-feature columns. The loss is then minimised with
# Flux.setup / Flux.update! (Optimisers.jl) -- FluxCompress.distill does exactly that, with Hinton's KL
# loss (`loss=:kl`) or the article's MSE (`loss=:mse`).

using Flux: Chain, Dense, relu, softmax, mse
using FluxCompress: distill
using Optimisers: Adam

large_model = Chain(Dense(784 => 128, relu), Dense(128 => 64, relu), Dense(64 => 10))
small_model = Chain(Dense(784 => 64, relu), Dense(64 => 10))

x = rand(Float32, 784, 256)                 # 256 samples (columns)
large_output = large_model(x)
small_output = small_model(x)
soft_labels = softmax(large_output)         # softmax over classes (dims=1)
loss = mse(small_output, soft_labels)
println("article loss before training: ", loss)

trained, losses = distill(large_model, small_model, x; loss=:mse, temperature=1.0, epochs=3, batchsize=64,
                          opt=Adam(1e-3))
println("after distillation (mean loss per epoch): ", losses)
println("article loss after: ", mse(trained(x), soft_labels))
