"""Where the real JLD2 corpus is: ``$PYFLUX_JLD2_CORPUS``, else ``shared/corpus_jld2`` beside the repository
(how CI lays out a clone), else the development machines' ``/work/shared/corpus_jld2``."""
from __future__ import annotations

import os
from pathlib import Path


def _find() -> Path:
    candidates = [os.environ.get("PYFLUX_JLD2_CORPUS"),
                  Path(__file__).resolve().parents[2] / "shared" / "corpus_jld2",
                  "/work/shared/corpus_jld2"]
    for c in candidates:
        if c and Path(c).is_dir():
            return Path(c)
    return Path(candidates[1])  # absent: the tests that need it fail and name this path


CORPUS = _find()
