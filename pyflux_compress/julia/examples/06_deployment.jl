# Article snippet 6, "模型部署" (deployment), as runnable Flux code.
#
# `load("model.jld2")` in the article means reading a saved model. A Flux checkpoint stores the state
# (`Flux.state`) and the architecture; FluxCompress.load_model rebuilds the Chain without evaluating code
# (a whitelist of layer constructors) and `Flux.loadmodel!` copies the weights in. `predict` is the
# article's function; `x_test = rand(784)` is one sample (a vector), which a Dense Chain accepts.

using Flux: Chain, Dense, relu
using FluxCompress: save_model, load_model

model = Chain(Dense(784 => 128, relu), Dense(128 => 64, relu), Dense(64 => 10))
path = joinpath(mktempdir(), "model.jld2")
save_model(path, model)            # what a training script would have done

# 加载模型 (load the model)
model = load_model(path)

# 模型部署 (deployment)
function predict(model, x)
    return model(x)
end

# 测试模型 (test the model)
x_test = rand(Float32, 784)
y_pred = predict(model, x_test)
println("prediction: ", argmax(y_pred) - 1, " (scores ", round.(y_pred; digits=3), ")")
