"""
    FluxCompress

The Julia twin of the Python package `pyflux_compress`: magnitude, structured and N:M pruning,
quantization, weight sharing, low-rank factorisation, distillation and Flux.state checkpoints for
Flux `Chain`s. Every function is pure (returns a new model) and mirrors the Python function of the
same name bit for bit where the result is integer or boolean (masks, quantized weights), and to 1e-5
for floats. See `README.md` for the table of twins and the exact rules (rounding, tie-breaking).

Index convention shared with Python: arrays have Julia's shape on both sides; "linear index" means
Julia's column-major index, which is numpy's `ravel(order="F")` index of the same array.
"""
module FluxCompress

include("util.jl")
include("stats.jl")
include("prune.jl")
include("sparsify.jl")
include("structured.jl")
include("quantize.jl")
include("sharing.jl")
include("lowrank.jl")
include("distill.jl")
include("io.jl")
include("kernels.jl")

export walk, rebuild, prunable, corder, corder_index, sparsity, count_params
export n_to_prune, magnitude_mask, magnitude_masks, prune, apply_masks, polynomial_decay, pruning_due
export nm_mask, parse_pattern, sparsify
export structured_plan, select_units, prune_structured
export QuantizedWeight, QuantizedChain, int_range, quantize_array, dequantize_array, calibration_range,
       activation_qparams, quantize, dequantize
export kmeans_1d, share_weights
export rank_for_energy, lowrank
export optimiser_rule, soft_targets, distill_loss, distill
export save_model, load_model, load_state, model_from_arch, arch_string, activation, activation_name

end # module
