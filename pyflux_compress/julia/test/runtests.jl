# Tests of FluxCompress (run with `julia --project=julia -e 'using Pkg; Pkg.test()'`).
# The Python parity suite (tests/test_parity.py) checks the same functions against the numpy backend.
#
# Style, for the linter: the linter (fatou) does not look inside macro calls, so every test body is a
# plain function and every assertion a plain call `check(condition)` / `check_throws(T, f)`; the only
# macros (@testset, @test) live in the two helpers and the driver at the bottom. Explicit imports only.

using Test: @test, @testset, @test_throws
using FluxCompress: walk, rebuild, copy_model, unit_scores, n_to_prune, pruning_due, soft_targets
using FluxCompress: magnitude_mask, prune, polynomial_decay, sparsity, count_params, nm_mask, sparsify
using FluxCompress: prune_structured, quantize_array, dequantize_array, quantize, dequantize, kmeans_1d
using FluxCompress: share_weights, lowrank, distill_loss, distill, save_model, load_model, load_state
using FluxCompress: model_from_arch, arch_string, corder, rank_for_energy
using FluxCompress: kernel_magnitude_masks, kernel_nm_mask, kernel_select_units, kernel_quantize_array
using FluxCompress: kernel_dequantize_array, kernel_kmeans_1d, kernel_svd, kernel_singular_values
using FluxCompress: kernel_distill_loss_grad, kernel_train_step, field_at
import Flux
using Flux: Chain, Dense, Conv, MaxPool, BatchNorm, flatten, relu, loadmodel!
using Optimisers: Descent, setup, update!
using Flux: withgradient, onehotbatch, logitcrossentropy
using Random: Xoshiro

check(cond::Bool) = @test cond
check_throws(T::Type, f::Function) = @test_throws T f()

const RNG = Xoshiro(1)
const FLUX_VERSION = pkgversion(Flux)
const FIXTURES = joinpath(@__DIR__, "fixtures")

# test/fixtures/archs.txt: (minimum Flux version, model text) per line; `[flux>=0.15] text` needs Flux 0.15
function arch_lines()
    out = Tuple{VersionNumber,String}[]
    for line in readlines(joinpath(FIXTURES, "archs.txt"))
        (isempty(line) || startswith(line, "#")) && continue
        m = match(r"^\[flux>=([0-9.]+)\] (.*)$", line)
        push!(out, m === nothing ? (v"0", String(line)) : (VersionNumber(m[1]), String(m[2])))
    end
    return out
end
mlp() = Chain(Dense(randn(RNG, Float32, 8, 12), randn(RNG, Float32, 8), relu),
              Dense(randn(RNG, Float32, 6, 8), randn(RNG, Float32, 6), relu),
              Dense(randn(RNG, Float32, 3, 6), zeros(Float32, 3)))

function test_walk()
    m = Chain(Dense(2 => 3, relu), Chain(Dense(3 => 3), relu), Dense(3 => 1))
    check(first.(walk(m)) == ["layers[1]", "layers[2].layers[1]", "layers[2].layers[2]", "layers[3]"])
    m2 = copy_model(m)
    check(m2[1].weight == m[1].weight && m2[1].weight !== m[1].weight)
    check(length(walk(rebuild(m, Any[l for (_, l) in walk(m)]))) == 4)
    check(corder([1 2; 3 4]) == [1, 2, 3, 4])            # numpy C order = Julia row by row
end

function test_prune()
    # numpy C order of |W| (row by row): 1 3 2 0.5 2 3. k = 3 pruned: 0.5 (W[2,2]), 1 (W[1,1]), and of the
    # tie 2 (W[2,1]) / 2 (W[3,1]) the first in C order, W[2,1].
    W = Float32[1 -3; 2 0.5; -2 3]
    check(magnitude_mask(W, 0.5) == Bool[0 1; 0 0; 1 1])
    check(n_to_prune(0.5, 5) == 3 && n_to_prune(0.25, 2) == 1)   # half rounds up
    model = mlp()
    pruned, masks = prune(model, 0.75; scope=:layer)
    check(all(count(!, m) == n_to_prune(0.75, length(m)) for (_, m) in masks))
    check(isapprox(sparsity(pruned).total, 0.75; atol=0.02))
    check(sparsity(model).total == 0)                            # input untouched
    check(count_params(pruned).total < count_params(model; nonzero=false).total)
    _, gm = prune(model, 0.9; scope=:global)
    check(sum(count(!, m) for (_, m) in gm) == n_to_prune(0.9, 96 + 48 + 18))
    ws = [l.weight for (_, l) in walk(model)]
    kept = reduce(vcat, [abs.(vec(w))[vec(m)] for (w, (_, m)) in zip(ws, gm)])
    dropped = reduce(vcat, [abs.(vec(w))[.!vec(m)] for (w, (_, m)) in zip(ws, gm)])
    check(minimum(kept) >= maximum(dropped))
    check_throws(ArgumentError, () -> prune(model, 1.0))
    check_throws(ArgumentError, () -> prune(model, 0.5; include=["layers[9]"]))
    check(polynomial_decay(0; initial=0.0, final=0.9, begin_step=0, end_step=10) == 0.0)
    check(isapprox(polynomial_decay(10; initial=0.0, final=0.9, begin_step=0, end_step=10), 0.9))
    check(pruning_due(10; begin_step=0, end_step=10, frequency=3))
    _, bm = prune(model, 0.5; include=["layers[1].bias", "Dense"])
    check(first.(bm) == ["layers[1]", "layers[1].bias", "layers[2]", "layers[3]"])
end

function test_sparsify()
    model = mlp()
    s, _ = sparsify(model; pattern="2:4")
    W = s[1].weight                                              # 8 × 12: groups of 4 along the inputs
    check(all(count(!iszero, W[o, g:g+3]) <= 2 for o in 1:8, g in 1:4:12))
    check(nm_mask(Float32[1 1 1 1], 2, 4) == Bool[1 1 0 0])     # ties: the earlier inputs are kept
    check(nm_mask(Float32[1 -5 3 0 2 7], 2, 4) == Bool[0 1 1 0 1 1])   # partial group keeps <= 2
    c = Conv(randn(RNG, Float32, 2, 2, 8, 3), zeros(Float32, 3))
    cm = nm_mask(c.weight, 2, 4)
    check(all(count(cm[x, y, g:g+3, o]) == 2 for x in 1:2, y in 1:2, g in (1, 5), o in 1:3))
    check_throws(ArgumentError, () -> sparsify(model, 0.3; pattern="2:4"))
    check_throws(ArgumentError, () -> sparsify(model; pattern="4:4"))
    s2, _ = sparsify(model, 0.5)
    check(sparsity(s2).total == 0.5)
end

function test_structured()
    model = mlp()
    small, kept, skipped = prune_structured(model, 0.5)
    check(first.(skipped) == ["layers[3]"])
    check(size(small[1].weight) == (4, 12) && size(small[2].weight) == (3, 4) && size(small[3].weight) == (3, 3))
    check(last(kept[1]) == sort(sortperm(unit_scores(model[1].weight, :l1))[5:end]))
    x = randn(RNG, Float32, 12, 5)
    check(isapprox(small[1](x), model[1](x)[last(kept[1]), :]; rtol=1e-6))   # kept units unchanged
    cnn = Chain(Conv(randn(RNG, Float32, 3, 3, 1, 4), zeros(Float32, 4), relu), BatchNorm(4), MaxPool((2, 2)),
                flatten, Dense(randn(RNG, Float32, 2, 36), zeros(Float32, 2)))
    c2, ck, _ = prune_structured(cnn, 0.5)
    check(size(c2[1].weight, 4) == 2 && size(c2[5].weight) == (2, 18) && length(c2[2].β) == 2)
    xi = randn(RNG, Float32, 8, 8, 1, 2)
    check(isapprox(c2[1:3](xi), cnn[1:3](xi)[:, :, last(ck[1]), :]; rtol=1e-5))
    check_throws(ArgumentError, () -> prune_structured(model, 0.99))
end

function test_quantize()
    W = Float32[0.5 -1.0; 0.25 1.27]
    q = quantize_array(W; bits=8, scheme=:symmetric)
    s = 1.27f0 / 127f0
    check(q.scale[] == s && q.q == Int8.(clamp.(round.(W ./ s), -127, 127)))
    check(all(abs.(dequantize_array(q) .- W) .<= s / 2 + eps(Float32)))
    qa = quantize_array(W; bits=8, scheme=:affine, granularity=:per_channel)
    check(size(qa.scale) == (2,) && all(-128 .<= qa.q .<= 127))
    check(quantize_array(Float32[2.5 -2.5 0.5]; bits=8).q == Int8[127 -127 25])   # 0.5/(2.5/127) = 25.4
    check(quantize_array(Float32[0.5 1.5]; bits=2).q == Int8[0 1])                # 0.5/1.5 -> 0
    check(quantize_array(Float32[-1 0 3]; bits=1).q == Int8[-1 1 1])
    check(quantize_array(Float32[-1 0 3]; bits=1).scale[] == Float32(4 / 3))
    check(quantize_array(Float32[-1 2 3]; bits=1, mask=Bool[1 0 1]).q == Int8[-1 0 1])
    qz = quantize_array(Float32[-0.3 0.1 1.0]; bits=8, scheme=:affine)
    check(qz.zero_point[] == Int32(-128 - round(-0.3f0 / qz.scale[])))
    model = mlp()
    qc = quantize(model; bits=8, granularity=:per_channel, calibration=randn(RNG, Float32, 12, 10))
    x = randn(RNG, Float32, 12, 4)
    check(isapprox(qc(x), model(x); rtol=0.1))
    check(isapprox(dequantize(qc)[1].weight, model[1].weight; rtol=0.05))
    mixed = quantize(model; bits=Dict("layers[1]" => 4))
    check(first.(mixed.weights) == ["layers[1]"])
    check_throws(ArgumentError, () -> quantize(model; bits=9))
end

function test_sharing()
    c, a, _ = kmeans_1d([0.0, 0.1, 1.0, 1.1], 2)
    check(isapprox(c, Float32[0.05, 1.05]) && a == [1, 1, 2, 2])
    model, _ = prune(mlp(), 0.5)
    shared, books = share_weights(model; bits=2)
    check(all(length(unique(filter(!iszero, l.weight))) <= 4 for (_, l) in walk(shared)))
    check(all(iszero.(shared[1].weight) .== iszero.(model[1].weight)))
    cb, idx, keep = last(books[1])
    check(shared[1].weight[keep] == cb[idx[keep] .+ 1] && all(idx[.!keep] .== 0))
end

function test_lowrank()
    U = randn(RNG, Float32, 20, 2)
    V = randn(RNG, Float32, 2, 30)
    model = Chain(Dense(U * V, zeros(Float32, 20), relu), Dense(20 => 3))
    lr, ranks, skipped = lowrank(model; energy=0.999)
    check(ranks == ["layers[1]" => 2] && length(lr) == 3 && first.(skipped) == ["layers[2]"])
    x = randn(RNG, Float32, 30, 4)
    check(isapprox(lr(x), model(x); rtol=1e-4))
end

function test_distill()
    teacher = mlp()
    student = Chain(Dense(12 => 4, relu), Dense(4 => 3))
    X = randn(RNG, Float32, 12, 64)
    z = randn(RNG, Float32, 3, 5)
    check(isapprox(distill_loss(z, soft_targets(z, 2.0); temperature=2.0), 0; atol=1e-5))   # same logits: KL 0
    trained, losses = distill(teacher, student, X; epochs=5, batchsize=16, opt=Descent(0.05))
    check(losses[end] < losses[1])
    check(student[1].weight != trained[1].weight)              # input untouched, the copy trained
    _, lm = distill([teacher, teacher], student, X, rand(RNG, 1:3, 64); loss=:mse, epochs=1)
    check(isfinite(lm[1]))
end

function test_checkpoints()
    model = mlp()
    path = joinpath(mktempdir(), "m.jld2")
    save_model(path, model)
    back = load_model(path)
    x = randn(RNG, Float32, 12, 3)
    check(isapprox(back(x), model(x)))
    check(keys(load_state(path)) == (:layers,))
    check(keys(load_state(path).layers[1]) == (:weight, :bias, :σ))
    check_throws(ArgumentError, () -> model_from_arch("run(`rm -rf /`)"))
    check(arch_string(model_from_arch("Chain(NNlib.relu, Flux.Dense(2 => 3, NNlib.relu))")) ==
          "Chain(relu, Dense(2 => 3, relu))")             # Julia's own `string(model)` may qualify names
    cnn = "Chain(Conv((3, 3), 1 => 4, relu, pad=1, stride=2), BatchNorm(4, relu), MeanPool((2, 2), stride=1), " *
          "GlobalMeanPool(), flatten, Dropout(0.5), Dense(4 => 2; bias=false), softmax)"
    check(arch_string(model_from_arch(cnn)) == cnn)
    # A file written by Python's pfc.save (julia/test/fixtures/make_fixture.py)
    fixtures = FIXTURES
    for name in ("python_mlp", "python_cnn", "python_zoo", "python_seq")
        # python_seq: Flux >= 0.15 recurrent layers, and LSTM returning only h (0.15.0-0.15.2 returned (h, c),
        # which a following layer cannot take: Flux PR #2547, fixed in 0.15.3)
        name == "python_seq" && FLUX_VERSION < v"0.15.3" && continue
        file = joinpath(fixtures, "$name.jld2")
        check(isfile(file))
        isfile(file) || continue
        m = loadmodel!(model_from_arch(strip(read(joinpath(fixtures, "$name.arch.txt"), String))), load_state(file))
        check(arch_string(m) == strip(read(joinpath(fixtures, "$name.arch.txt"), String)))   # same syntax both ways
        xs = parse.(Float32, readlines(joinpath(fixtures, "$name.x.txt")))
        ys = parse.(Float32, readlines(joinpath(fixtures, "$name.y.txt")))
        shape = Tuple(parse.(Int, split(readline(joinpath(fixtures, "$name.shape.txt")))))
        X = reshape(xs, shape)      # Python wrote x.T (Julia layout) in Fortran order
        check(isapprox(vec(m(X)), ys; rtol=1e-4, atol=1e-5))
    end
end

# ---------------------------------------------------------------------------------------------------------
# The shared oracle: fixtures/kernels.txt (written by fixtures/make_kernel_fixtures.py from the numpy kernels,
# which tests/test_parity.py checks against the same file). Arrays are stored in numpy's C order of their numpy
# shape (= the Julia shape: parameters have Flux's shape on both sides), indices 0-based, data batch-first;
# `run_kernel` converts exactly as pyflux_compress/backends/julia.py does.
const FIXTURE_TYPES = Dict("f32" => Float32, "f64" => Float64, "i64" => Int, "bool" => Bool)

function fixture_value(kind::AbstractString, dims::Vector{Int}, text::AbstractString)
    kind == "none" && return nothing
    kind == "str" && return String(text)
    T = FIXTURE_TYPES[kind]
    v = T == Bool ? parse.(Int, split(text)) .!= 0 : parse.(T, split(text))
    isempty(dims) && return v[1]
    length(dims) == 1 && return v
    return permutedims(reshape(v, reverse(dims)...), length(dims):-1:1)     # C order -> the Julia array
end

function read_kernel_fixtures(path::AbstractString)
    cases = NamedTuple[]
    lines = readlines(path)
    i = 1
    while i <= length(lines)
        line = lines[i]
        i += 1
        (isempty(line) || startswith(line, "#") || line == "end") && continue
        words = split(line, ' ')
        if words[1] == "case"
            push!(cases, (kernel=String(words[2]), id=String(words[3]), args=Dict{String,Any}(), outs=Dict{String,Any}()))
        else
            value = fixture_value(words[3], parse.(Int, words[4:end]), lines[i])
            i += 1
            target = words[1] == "in" ? cases[end].args : cases[end].outs
            base, index = occursin('.', words[2]) ? split(words[2], '.'; limit=2) : (words[2], nothing)
            if index === nothing
                target[String(base)] = value
            else
                push!(get!(target, String(base), Any[]), value)
            end
        end
    end
    return cases
end

_zero_dim(x) = x isa AbstractArray ? x : fill(x)

function run_kernel(kernel::AbstractString, a::Dict{String,Any})
    kernel == "magnitude_prune" && return Dict("masks" => collect(kernel_magnitude_masks(Tuple(a["arrays"]), a["k"])))
    kernel == "nm_mask" && return Dict("mask" => kernel_nm_mask(a["weight"], a["n"], a["m"]))
    kernel == "select_units" &&
        return Dict("keep" => kernel_select_units(a["weight"], a["out_axis"] + 1, a["n_remove"], a["criterion"]) .- 1)
    if kernel == "quantize_weight"
        r = kernel_quantize_array(a["w"], a["bits"], a["scheme"], a["granularity"], a["mask"])
        return Dict("q" => r.q, "scale" => r.scale, "zero_point" => r.zero_point)
    end
    kernel == "dequantize_weight" &&
        return Dict("w" => kernel_dequantize_array(a["qweight"], _zero_dim(a["scale"]), _zero_dim(a["zero_point"])))
    if kernel == "kmeans_1d"
        c, labels, it = kernel_kmeans_1d(a["values"], a["k"], a["max_iter"])
        return Dict("centroids" => c, "labels" => labels .- 1, "iterations" => it)
    end
    kernel == "singular_values" && return Dict("s" => kernel_singular_values(a["w"]))
    if kernel == "svd"
        U, S, Vt = kernel_svd(a["w"])
        return Dict("s" => S, "recon" => (U .* S') * Vt)
    end
    kernel == "rank_for_energy" && return Dict("r" => rank_for_energy(a["s"], a["energy"]))
    kernel == "n_to_prune" && return Dict("k" => n_to_prune(a["sparsity"], a["n"]))
    if kernel == "distill_loss_grad"
        y = a["yb"] === nothing ? nothing : a["yb"] .+ 1
        loss, grad = kernel_distill_loss_grad(permutedims(a["s"]), permutedims(a["p"]), y, a["T"], a["alpha"], a["kind"])
        return Dict("loss" => loss, "grad" => permutedims(grad))
    end
    throw(ArgumentError("kernels.txt names an unknown kernel $kernel"))
end

_flat(x) = x isa AbstractArray ? vec(collect(x)) : [x]

function same_value(want, have)
    if want isa AbstractVector && !isempty(want) && first(want) isa AbstractArray     # a tuple of arrays
        return length(want) == length(have) && all(same_value(w, h) for (w, h) in zip(want, have))
    end
    w, h = _flat(want), _flat(have)
    length(w) == length(h) || return false
    want isa AbstractArray && ndims(want) > 1 && size(want) != size(have) && return false
    eltype(w) <: AbstractFloat && return isapprox(Float64.(h), Float64.(w); rtol=1e-5, atol=1e-6)
    return all(Int.(h) .== Int.(w))
end

function test_kernel_fixtures()
    cases = read_kernel_fixtures(joinpath(@__DIR__, "fixtures", "kernels.txt"))
    check(length(cases) >= 30)
    for case in cases
        got = run_kernel(case.kernel, case.args)
        for (name, want) in case.outs
            ok = same_value(want, got[name])
            ok || @info "kernel fixture mismatch" case.kernel case.id name
            check(ok)
        end
    end
end

# Issue 14 defects, each pinned here (and on the Python side in tests/test_parity.py).
function test_fixed_defects()
    # 1: per-tensor quantization: broadcasting over a 0-dim zero point gave a scalar `_along` had no method for
    W = randn(RNG, Float32, 4, 6)
    check(all(abs.(dequantize_array(quantize_array(W; bits=8)) .- W) .<= maximum(abs, W) / 127))
    model = mlp()
    qc = quantize(model; bits=8)                                   # granularity=:per_tensor, the default
    x = randn(RNG, Float32, 12, 3)
    check(isapprox(dequantize(qc)(x), model(x); rtol=0.1, atol=0.05))
    check(isapprox(qc(x), model(x); rtol=0.1, atol=0.05))
    # 5 and 8: what Python prints parses and prints back (BatchNorm eps as Float32; Dropout p, dims, active)
    for (needs, line) in arch_lines()
        FLUX_VERSION >= needs || continue
        check(arch_string(model_from_arch(line)) == line)
    end
    # 6: BatchNorm without affine parameters or statistics (β, γ, μ, σ² are `nothing`) slices cleanly
    cnn = Chain(Conv(randn(RNG, Float32, 3, 3, 1, 4), zeros(Float32, 4), relu; pad=1),
                BatchNorm(4; affine=false, track_stats=false), flatten, Dense(randn(RNG, Float32, 2, 144), zeros(Float32, 2)))
    small, _, _ = prune_structured(cnn, 0.5)
    check(small[2].chs == 2 && small[2].β === nothing && small[2].μ === nothing)
    # 8: MLUtils.flatten (what Flux's docs now use) is a flatten for structured pruning too
    if isdefined(Flux, :MLUtils)
        mlflatten = getfield(getfield(Flux, :MLUtils), :flatten)
        m2 = Chain(Conv(randn(RNG, Float32, 3, 3, 1, 4), zeros(Float32, 4), relu; pad=1), mlflatten,
                   Dense(randn(RNG, Float32, 5, 144), zeros(Float32, 5), relu), Dense(5 => 2))
        _, kept2, _ = prune_structured(m2, 0.5)
        check(first.(kept2) == ["layers[1]", "layers[3]"])
    end
end

# The training step kernel against Flux's own loop on the same model (withgradient + Optimisers.update!).
function test_train_step()
    arch = "Chain(Dense(4 => 3, relu), BatchNorm(3), Dense(3 => 2))"
    names = ("layers[1].weight", "layers[1].bias", "layers[2].β", "layers[2].γ", "layers[2].μ", "layers[2].σ²",
             "layers[3].weight", "layers[3].bias")
    ref = model_from_arch(arch)
    arrays = Tuple(randn(RNG, Float32, size(field_at(ref, n))) .^ 2 for n in names)
    # a C-ordered numpy array arrives as a strided view of the same shape (PyArray): mimic one
    strided = Tuple(ndims(a) == 2 ? PermutedDimsArray(permutedims(a), (2, 1)) : a for a in arrays)
    x, y = randn(RNG, Float32, 4, 5), [1, 2, 2, 1, 2]
    rule = ("sgd", 0.1, 0.9, 0.999, 1e-8, 0.0, false, 0.0)
    session, loss, out, new = kernel_train_step(nothing, arch, names, strided, x, y, "logitcrossentropy", rule)
    for (n, a) in zip(names, arrays)
        field_at(ref, n) .= a
    end
    r = withgradient(m -> logitcrossentropy(m(x), onehotbatch(y, 1:2)), ref)
    update!(setup(Descent(0.1), ref), ref, r.grad[1])
    check(loss ≈ r.val && size(out) == (2, 5))
    check(all(new[i] ≈ field_at(ref, n) for (i, n) in enumerate(names)))     # μ, σ² updated too
    again = kernel_train_step(session, arch, names, new, x, y, "logitcrossentropy", rule)
    check(again[1] === session)                                             # model and state are reused
    check_throws(ArgumentError, () -> kernel_train_step(nothing, arch, names, arrays, x, y, "hinge", rule))
    check_throws(DimensionMismatch, () -> kernel_train_step(nothing, arch, names, reverse(arrays), x, y, "mse", rule))
end

# Issues 12 and 13: every model string of archs.txt (all layers Python prints) is built, printed back, saved
# and loaded with the same arrays; the closures and version limits give ArgumentErrors, not MethodErrors.
_arrays(x::AbstractArray{<:Number}) = Any[x]
_arrays(x::Union{Tuple,NamedTuple}) = reduce(vcat, (_arrays(v) for v in values(x)); init=Any[])
_arrays(x) = Any[]

function test_layer_zoo()
    path = joinpath(mktempdir(), "zoo.jld2")
    for (needs, text) in arch_lines()
        FLUX_VERSION >= needs || continue
        m = model_from_arch(text)
        check(arch_string(m) == text)
        save_model(path, m)
        back = load_model(path)
        check(arch_string(back) == text)
        a, b = _arrays(Flux.state(m)), _arrays(Flux.state(back))
        check(length(a) == length(b) && all(x == y for (x, y) in zip(a, b)))
        check(keys(load_state(path)) == (:layers,))
    end
    # the connections Python prints: +, vcat, hcat and the cat closure (a named callable here)
    sk = model_from_arch("SkipConnection(Conv((1, 1), 2 => 3), (xs...) -> cat(xs...; dims=3))")
    x = randn(RNG, Float32, 4, 4, 2, 1)
    check(sk(x) == cat(sk.layers(x), x; dims=3) && size(sk(x)) == (4, 4, 5, 1))
    check(Flux.state(sk).connection == ())                        # as Python writes every connection
    check_throws(ArgumentError, () -> model_from_arch("SkipConnection(Dense(2 => 2), (a, b) -> run(`ls`))"))
    check_throws(ArgumentError, () -> model_from_arch("SkipConnection(Dense(2 => 2), (xs...) -> cat(xs...; dims=99))"))
    # named containers and the Upsample mode (a type parameter only)
    p = model_from_arch("Parallel(+; a = Dense(5 => 2), b = Dense(5 => 2, relu))")
    check(keys(p.layers) == (:a, :b) && keys(Flux.state(p)) == (:connection, :layers))
    up = model_from_arch("Upsample(:bilinear, size = (4, 5))")
    check(size(up(randn(RNG, Float32, 2, 3, 1, 1))) == (4, 5, 1, 1))
    # field layouts Python writes (tests/test_parity.py pins the same tables against Flux's source)
    check(keys(Flux.state(model_from_arch("GroupNorm(4, 2)"))) ==
          (:G, :λ, :β, :γ, :μ, :σ², :ϵ, :momentum, :affine, :track_stats, :active, :chs))
    check(keys(Flux.state(model_from_arch("MultiHeadAttention(4; nheads=2)"))) ==
          (:nheads, :q_proj, :k_proj, :v_proj, :attn_drop, :out_proj))
    check(model_from_arch("LayerNorm(4; eps=0.001)").ϵ === 0.001f0)   # Float32, as Python writes ϵ
    check(arch_string(Flux.InstanceNorm(4; track_stats=true)) == "InstanceNorm(4, track_stats=true)")
    if FLUX_VERSION < v"0.15"       # 0.14's RNN is the stateful Recur: refused with the reason
        check_throws(ArgumentError, () -> model_from_arch("Chain(LSTM(2 => 3))"))
    else
        lstm = model_from_arch("LSTM(2 => 3; bias=false)")
        check(keys(Flux.state(lstm).cell) == (:Wi, :Wh, :bias) && Flux.state(lstm).cell.bias === false)
        check(keys(Flux.state(model_from_arch("GRUv3(2 => 3)")).cell) == (:Wi, :Wh, :b, :Wh_h̃))
    end
end

@testset "FluxCompress" begin
    @testset "training step kernel" test_train_step()
    @testset "kernel fixtures (shared with Python)" test_kernel_fixtures()
    @testset "issue 14 defects" test_fixed_defects()
    @testset "walk and rebuild" test_walk()
    @testset "magnitude pruning" test_prune()
    @testset "sparsify and N:M" test_sparsify()
    @testset "structured pruning" test_structured()
    @testset "quantization" test_quantize()
    @testset "weight sharing" test_sharing()
    @testset "low rank" test_lowrank()
    @testset "distillation" test_distill()
    @testset "checkpoints" test_checkpoints()
    @testset "layer zoo (issues 12, 13)" test_layer_zoo()
end
