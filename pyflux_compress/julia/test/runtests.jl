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
using FluxCompress: model_from_arch, arch_string, corder
using Flux: Chain, Dense, Conv, MaxPool, BatchNorm, flatten, relu, loadmodel!
using Optimisers: Descent
using Random: Xoshiro

check(cond::Bool) = @test cond
check_throws(T::Type, f::Function) = @test_throws T f()

const RNG = Xoshiro(1)
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
    fixtures = joinpath(@__DIR__, "fixtures")
    for name in ("python_mlp", "python_cnn")
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

@testset "FluxCompress" begin
    @testset "walk and rebuild" test_walk()
    @testset "magnitude pruning" test_prune()
    @testset "sparsify and N:M" test_sparsify()
    @testset "structured pruning" test_structured()
    @testset "quantization" test_quantize()
    @testset "weight sharing" test_sharing()
    @testset "low rank" test_lowrank()
    @testset "distillation" test_distill()
    @testset "checkpoints" test_checkpoints()
end
