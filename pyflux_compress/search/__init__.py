"""Automatic compression search (``pfc.autocompress``): Optuna over per-layer policies, in-process or on Dask.

Optuna, optuna-integration and dask.distributed are the ``[search]`` extra; they are imported only when a
search runs.
"""
from .autocompress import (SearchResult, autocompress, describe_policy, measure_latency, paired_drop_se,
                           validation_split)

__all__ = ["SearchResult", "autocompress", "describe_policy", "measure_latency", "paired_drop_se",
           "validation_split"]
