"""Compression techniques, one module each (docs/ARCHITECTURE.md). Importing the package registers the quantized
wrappers of sequence layers with ``pfc.quantize`` (quantize_sequence.py)."""
from . import quantize_sequence  # noqa: F401  (registers QuantizedRecurrent / QuantizedEmbedding)
