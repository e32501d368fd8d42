# Article snippet 5, "模型转换" (conversion to ONNX), as runnable Julia code.
#
# `convert(model, "ONNX")` does not exist in Flux (Base.convert converts between Julia types). The
# conversion is done by the Python package: save the model here as a Flux checkpoint (Flux.state +
# the model's Flux syntax, readable by JLD2/Flux and by Python), then export it to ONNX from Python:
#
#     import pyflux_compress as pfc
#     pfc.export_onnx(pfc.load("model.jld2"), "model.onnx")

using Flux: Chain, Dense, relu
using FluxCompress: save_model, load_model

model = Chain(Dense(784 => 128, relu), Dense(128 => 64, relu), Dense(64 => 10))
path = joinpath(mktempdir(), "model.jld2")
save_model(path, model)
println("saved ", path, "; now in Python: pfc.export_onnx(pfc.load(\"", path, "\"), \"model.onnx\")")
same = load_model(path)
x = rand(Float32, 784)
println("round trip exact: ", same(x) == model(x))
