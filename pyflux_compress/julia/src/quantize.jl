# Quantization (twin of pfc.quantize / QuantizedChain.dequantize; pyflux_compress/compression/quantize.py).
#
# Rules, shared with Python (all Float32 unless stated; round = round half to even = numpy rint):
#   symmetric  qmax = 2^(b-1) - 1, qmin = -qmax (int8 [-127, 127], int4 [-7, 7])
#              amax = max|w| per group; scale = amax / Float32(qmax) (1 where amax == 0); zp = 0
#              q = clamp(round(w / scale), qmin, qmax)
#   affine     qmin = -2^(b-1), qmax = 2^(b-1) - 1 (int8 [-128, 127], int4 [-8, 7])
#              lo = min(minimum(w), 0), hi = max(maximum(w), 0); scale = (hi - lo) / Float32(qmax - qmin)
#              (hi/n - lo/n where hi - lo overflows; 1 where hi == lo or scale underflows to 0); zp = clamp(qmin - round(lo / scale), qmin, qmax) :: Int32
#              q = clamp(round(w / scale) + zp, qmin, qmax)
#   binary     (bits = 1) α = Float32(sum(Float64.(|w|)) / n) over the group's unmasked entries;
#              q = 1 where w >= 0 else -1; q = 0 where masked out or α == 0; scale = α (1 where α == 0); zp = 0
#   groups     :per_tensor, or :per_channel = output channel (Dense rows, Conv dim 4)
#   dequantize (Float32(q) - Float32(zp)) * scale, clamped to ±floatmax(Float32)
#   activations (calibration) 8-bit per tensor on each quantized layer's INPUT, ranges from the float model:
#              :minmax = (minimum, maximum); :percentile (p = 99.99) = percentile p of |x| as (-a, a) for
#              symmetric, percentiles (100 - p, p) for affine; Statistics.quantile = numpy's linear rule.
#              lo = min(lo, 0), hi = max(hi, 0); symmetric: int8 [-127, 127], scale = max(|lo|, |hi|) / 127;
#              affine: uint8 [0, 255], scale = (hi - lo) / 255, zp = clamp(-round(lo / scale), 0, 255)
#   forward    xi = clamp(round(x / s_a) + zp_a, qmin, qmax) - zp_a (Float64; xi = x when not calibrated),
#              wi = q - zp_w (Float64); z = Float32(K(xi, wi) * (Float64(s_w) * Float64(s_a)) + bias) with K the
#              layer's matmul / convolution in Float64 (exact integer accumulation); then the activation.

using Flux: Dense, Conv, CrossCor
using Statistics: quantile

const PERCENTILE = 99.99

"""
    QuantizedWeight

Integer form of one weight array: `q` (Int8, the weight's size), `scale::Array{Float32}` and
`zero_point::Array{Int32}` of size `(out,)` per channel or `()` per tensor, `bits`, `scheme`
(`:symmetric`/`:affine`), `granularity` (`:per_tensor`/`:per_channel`).
"""
struct QuantizedWeight
    q::Array{Int8}
    scale::Array{Float32}
    zero_point::Array{Int32}
    bits::Int
    scheme::Symbol
    granularity::Symbol
end

"""
    QuantizedChain

The float `model` (shadow weights), the integer form of its quantized weights (`weights`: path =>
QuantizedWeight; layers with `bits = nothing` stay float) and, after calibration, the input activation
parameters (`activations`: path => (scale::Float32, zero_point::Int32, qmin, qmax)). Calling it runs the
integer-simulating forward of the rules above.
"""
struct QuantizedChain
    model::Any
    weights::Vector{Pair{String,QuantizedWeight}}
    activations::Vector{Pair{String,Tuple{Float32,Int32,Int,Int}}}
end

function int_range(bits::Integer, scheme::Symbol)
    (1 <= bits <= 8) || throw(ArgumentError("bits must be an integer in 1..8 (1 = binary), got $bits"))
    scheme in (:symmetric, :affine) || throw(ArgumentError("scheme must be :symmetric or :affine, got :$scheme"))
    bits == 1 && return (-1, 1)
    scheme == :symmetric && return (-(2^(bits - 1) - 1), 2^(bits - 1) - 1)
    return (-2^(bits - 1), 2^(bits - 1) - 1)
end

# The groups of W as a list of index sets: one per output channel, or one holding everything.
function _groups(W::AbstractArray, granularity::Symbol)
    granularity == :per_tensor && return [CartesianIndices(W)]
    granularity == :per_channel ||
        throw(ArgumentError("granularity must be :per_tensor or :per_channel, got :$granularity"))
    ax = output_axis(W)
    return [CartesianIndices(ntuple(d -> d == ax ? (o:o) : axes(W, d), ndims(W))) for o in axes(W, ax)]
end

_shape_like(v::Vector, granularity::Symbol) = granularity == :per_tensor ? fill(v[1]) : v

"""
    quantize_array(W; bits=8, scheme=:symmetric, granularity=:per_tensor, mask=nothing) -> QuantizedWeight

Quantize one weight array with the rules above (`mask`: keep-mask, used by binary only).
"""
function quantize_array(W::AbstractArray; bits::Integer=8, scheme::Symbol=:symmetric,
                        granularity::Symbol=:per_tensor, mask=nothing)
    qmin, qmax = int_range(bits, scheme)
    bits == 1 && scheme == :affine && throw(ArgumentError("bits=1 (binary) is symmetric by definition"))
    Wf = Float32.(W)
    groups = _groups(Wf, granularity)
    q = zeros(Int8, size(Wf))
    scales = Float32[]
    zps = Int32[]
    for g in groups
        w = Wf[g]
        if bits == 1
            m = mask === nothing ? trues(size(w)) : Bool.(mask[g])
            α = Float32(sum(Float64.(abs.(w[m])); init=0.0) / max(count(m), 1))
            s = α == 0f0 ? 1f0 : α
            q[g] = ifelse.(m .& (α != 0f0), ifelse.(w .>= 0f0, Int8(1), Int8(-1)), Int8(0))
            push!(scales, s); push!(zps, Int32(0))
        elseif scheme == :symmetric
            amax = maximum(abs, w)
            s = amax == 0f0 ? 1f0 : amax / Float32(qmax)
            q[g] = Int8.(clamp.(round.(w ./ s), qmin, qmax))
            push!(scales, s); push!(zps, Int32(0))
        else
            lo = min(minimum(w), 0f0)
            hi = max(maximum(w), 0f0)
            n = Float32(qmax - qmin)
            span = hi - lo
            # near ±3.4f38 `hi - lo` overflows to Inf: divide before subtracting (as schemes.py does)
            s = isfinite(span) ? span / n : hi / n - lo / n
            s = (hi == lo || s == 0f0) ? 1f0 : s      # s == 0: a subnormal range underflowed
            zp = Int32(clamp(Float32(qmin) - round(lo / s), qmin, qmax))
            q[g] = Int8.(clamp.(round.(w ./ s) .+ Float32(zp), qmin, qmax))
            push!(scales, s); push!(zps, zp)
        end
    end
    return QuantizedWeight(q, _shape_like(scales, granularity), _shape_like(zps, granularity),
                           bits, scheme, granularity)
end

# Shape a per-channel vector so it broadcasts along `axis` of an `nd`-dimensional array. Per tensor the
# scale/zero point is a 0-dim array, and broadcasting over a 0-dim array returns a scalar (Base broadcast.jl,
# `copy(bc::Broadcasted{<:AbstractArrayStyle{0}})` returns `bc[CartesianIndex()]`), so `Float32.(zp)` is a Number.
_along(v::Number, nd, axis) = v
_along(v::AbstractArray{<:Any,0}, nd, axis) = v[]
_along(v::AbstractVector, nd, axis) = reshape(v, ntuple(d -> d == axis ? length(v) : 1, nd))

"""
    dequantize_array(qw::QuantizedWeight) -> Array{Float32}

`(Float32(q) - Float32(zero_point)) * scale`.
"""
function dequantize_array(qw::QuantizedWeight)
    qf = Float32.(qw.q)
    ax = output_axis(qf)
    w = (qf .- _along(Float32.(qw.zero_point), ndims(qf), ax)) .* _along(qw.scale, ndims(qf), ax)
    # a weight near ±3.4f38 may round to the grid point one step past Float32's range: keep it finite
    return clamp.(w, -floatmax(Float32), floatmax(Float32))
end

"""
    calibration_range(x, scheme, method) -> (lo, hi)

Activation range of calibration inputs `x` (any shape) by `:minmax` or `:percentile` (rules above).
"""
function calibration_range(x::AbstractArray, scheme::Symbol, method::Symbol)
    v = Float32.(vec(x))
    method == :minmax && return (minimum(v), maximum(v))
    method == :percentile || throw(ArgumentError("method must be :minmax or :percentile, got :$method"))
    if scheme == :symmetric
        a = Float32(quantile(abs.(v), PERCENTILE / 100))
        return (-a, a)
    end
    return (Float32(quantile(v, (100 - PERCENTILE) / 100)), Float32(quantile(v, PERCENTILE / 100)))
end

"""
    activation_qparams(lo, hi, scheme) -> (scale::Float32, zero_point::Int32, qmin, qmax)
"""
function activation_qparams(lo::Real, hi::Real, scheme::Symbol)
    lo, hi = Float32(min(lo, 0)), Float32(max(hi, 0))
    if scheme == :symmetric
        amax = max(abs(lo), abs(hi))
        return (amax > 0 ? amax / 127f0 : 1f0, Int32(0), -127, 127)
    end
    s = hi > lo ? (hi - lo) / 255f0 : 1f0
    return (s, Int32(clamp(-round(lo / s), 0, 255)), 0, 255)
end

"""
    quantize(model; bits=8, scheme=:symmetric, granularity=:per_tensor, calibration=nothing,
             method=:minmax, masks=nothing) -> QuantizedChain

Quantize the Dense/Conv/CrossCor weights. `bits`: 1..8, or a Dict path => bits (`nothing` or absent
= the layer stays float). `calibration`: inputs in Flux layout (features × N, or W×H×C×N); each
quantized layer's input range is measured by running the float model. `masks`: path => keep-mask
(pruned entries, used by binary quantization).
"""
function quantize(model; bits=8, scheme::Union{Symbol,AbstractString}=:symmetric,
                  granularity::Union{Symbol,AbstractString}=:per_tensor, calibration=nothing,
                  method::Union{Symbol,AbstractString}=:minmax, masks=nothing)
    scheme, granularity, method = Symbol(scheme), Symbol(granularity), Symbol(method)
    method in (:minmax, :percentile) || throw(ArgumentError("method must be :minmax or :percentile, got :$method"))
    check_finite(model)
    maskd = masks === nothing ? Dict{String,Any}() : Dict{String,Any}(String(k) => v for (k, v) in masks)
    weights = Pair{String,QuantizedWeight}[]
    for (path, l) in walk(model)
        is_weight_layer(l) || continue
        b = bits isa AbstractDict ? get(bits, path, nothing) : bits
        b === nothing && continue
        push!(weights, path => quantize_array(l.weight; bits=Int(b), scheme, granularity,
                                              mask=get(maskd, path, nothing)))
    end
    isempty(weights) && throw(ArgumentError("model has no Dense/Conv/CrossCor layer to quantize"))
    acts = Pair{String,Tuple{Float32,Int32,Int,Int}}[]
    if calibration !== nothing
        x = calibration
        targets = Set(first.(weights))
        for (path, l) in walk(model)
            path in targets && push!(acts, path => activation_qparams(calibration_range(x, scheme, method)..., scheme))
            x = l(x)
        end
    end
    return QuantizedChain(copy_model(model), weights, acts)
end

"""
    dequantize(qc::QuantizedChain) -> model

A float Flux model whose quantized weights are replaced by `dequantize_array` (biases stay float).
"""
function dequantize(qc::QuantizedChain)
    byp = Dict(qc.weights)
    leaves = Any[haskey(byp, p) ? with_weight(l, dequantize_array(byp[p]), l.bias) : _copy_layer(l)
                 for (p, l) in walk(qc.model)]
    return rebuild(qc.model, leaves)
end

function _quantized_forward(l, qw::QuantizedWeight, act, x)
    xi = if act === nothing
        Float64.(x)
    else
        s, zp, qmin, qmax = act
        Float64.(clamp.(round.(Float32.(x) ./ s) .+ Float32(zp), qmin, qmax)) .- Float64(zp)
    end
    ax = output_axis(qw.q)
    wi = Float64.(qw.q) .- _along(Float64.(qw.zero_point), ndims(qw.q), ax)
    acc = l isa Dense ? wi * xi : _conv_identity(l, wi)(xi)
    sw = Float64.(qw.scale) .* (act === nothing ? 1.0 : Float64(act[1]))
    outdim = l isa Dense ? 1 : ndims(acc) - 1                 # channel dim of the output
    z = acc .* _along(sw, ndims(acc), outdim)
    l.bias isa AbstractArray && (z = z .+ _along(Float64.(l.bias), ndims(acc), outdim))
    return l.σ.(Float32.(z))
end

# The layer's convolution with weight `wi`, no bias, identity activation (Float64 kernel of the forward).
_conv_identity(l::Conv, wi) = Conv(wi, false, identity; stride=l.stride, pad=l.pad, dilation=l.dilation, groups=l.groups)
_conv_identity(l::CrossCor, wi) = CrossCor(wi, false, identity; stride=l.stride, pad=l.pad, dilation=l.dilation)

function (qc::QuantizedChain)(x)
    qw = Dict(qc.weights)
    acts = Dict(qc.activations)
    for (p, l) in walk(qc.model)
        x = haskey(qw, p) ? _quantized_forward(l, qw[p], get(acts, p, nothing), x) : l(x)
    end
    return x
end
