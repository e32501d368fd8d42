# Article snippet 4, "模型量化" (quantization), as runnable Flux code.
#
# Flux has no `quantize(model, 8)`. FluxCompress.quantize(model; bits=8) returns a QuantizedChain with
# int8 weights, scales and zero points (round half to even, then clamp: symmetric int8 is [-127, 127]);
# calling it runs the integer-simulating forward; `dequantize` gives a plain float Chain back.

using Flux: Chain, Dense, relu
using FluxCompress: quantize, dequantize

model = Chain(Dense(784 => 128, relu), Dense(128 => 64, relu), Dense(64 => 10))
quantized_model = quantize(model; bits=8, granularity=:per_channel, calibration=rand(Float32, 784, 32))

x = rand(Float32, 784, 4)
println("max |float - int8| output difference: ", maximum(abs.(model(x) .- quantized_model(x))))
for (path, qw) in quantized_model.weights
    println(path, ": int8 weights in [", minimum(qw.q), ", ", maximum(qw.q), "]")
end
float_again = dequantize(quantized_model)
println(float_again)
