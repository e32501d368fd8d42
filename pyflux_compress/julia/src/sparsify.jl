# Sparsification (twin of pfc.sparsify; pyflux_compress/compression/sparsify.py): the article's
# "set weights to zero to reach a level" = per-layer magnitude pruning (`prune(...; scope=:layer)`),
# and semi-structured N:M patterns such as "2:4".
#
# N:M rule, shared with Python: groups are M consecutive INPUT weights of one unit:
#   Dense weight (out, in): W[o, g*M+1 : g*M+M]                  (along dim 2)
#   Conv weight (kw, kh, cin, cout): W[x, y, g*M+1 : g*M+M, o]     (along input channels)
# In every group the N largest |w| are kept; ties keep the EARLIER input (a stable sort of -|w|).
# A trailing partial group (inputs not divisible by M) also keeps at most N.

"""
    nm_mask(W, n, m) -> BitArray (true = kept)

Keep the `n` largest-magnitude weights in every group of `m` consecutive input weights (see above).
"""
function nm_mask(W::AbstractArray, n::Integer, m::Integer)
    (0 < n < m) || throw(ArgumentError("pattern N:M needs 0 < N < M, got $n:$m"))
    axis = ndims(W) == 2 ? 2 : ndims(W) == 4 ? 3 :
           throw(ArgumentError("pattern needs a 2-D Dense or 4-D Conv weight, got $(ndims(W)) dims"))
    keep = falses(size(W))
    nin = size(W, axis)
    for unit in CartesianIndices(selectdim(W, axis, 1))   # every (row) or (x, y, o): one line of inputs
        line = [abs(W[_insert(unit, axis, j)]) for j in 1:nin]
        for g in 1:m:nin
            group = g:min(g + m - 1, nin)
            order = sortperm(-line[group]; alg=Base.Sort.MergeSort)   # largest first, ties: earlier first
            for r in order[1:min(n, length(group))]
                keep[_insert(unit, axis, group[r])] = true
            end
        end
    end
    return keep
end

# CartesianIndex of W from the index `unit` of a slice without dim `axis`, and j along `axis`.
_insert(unit::CartesianIndex, axis::Integer, j::Integer) =
    CartesianIndex(Tuple(unit)[1:axis-1]..., j, Tuple(unit)[axis:end]...)

"""
    parse_pattern(pattern) -> (n, m)

`"2:4"` -> `(2, 4)`; an error unless `0 < N < M`.
"""
function parse_pattern(pattern::AbstractString)
    mt = match(r"^\s*(\d+)\s*:\s*(\d+)\s*$", pattern)
    ok = mt !== nothing && 0 < parse(Int, mt.captures[1]) < parse(Int, mt.captures[2])
    ok || throw(ArgumentError("pattern must be a string \"N:M\" with 0 < N < M, e.g. \"2:4\"; got \"$pattern\""))
    return parse(Int, mt.captures[1]), parse(Int, mt.captures[2])
end

"""
    sparsify(model, level=nothing; pattern=nothing, include=nothing) -> (model, masks)

`pattern === nothing`: `prune(model, level; scope=:layer, include)`. `pattern = "N:M"`: the N:M rule
above on every target (`level` must then be `nothing` or `1 - N/M`). Returns the new model and
`key => mask` pairs.
"""
function sparsify(model, level=nothing; pattern=nothing, include=nothing)
    if pattern === nothing
        level === nothing && throw(ArgumentError("give a sparsity level in [0, 1) or a pattern like \"2:4\""))
        return prune(model, level; scope=:layer, include)
    end
    n, m = parse_pattern(pattern)
    level === nothing || isapprox(level, 1 - n / m) ||
        throw(ArgumentError("level=$level contradicts pattern=\"$pattern\" (sparsity $(1 - n / m))"))
    targets = prunable(model, include)
    check_finite(model)
    bypath = Dict(walk(model))
    masks = [target_key(p, name) => nm_mask(param_array(bypath[p], name), n, m) for (p, name) in targets]
    return apply_masks(model, masks), masks
end
