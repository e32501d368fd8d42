"""The corpus-based tests skip where the real JLD2 corpus is absent; in CI it must be there, or those acceptance
tests would silently turn into skips."""
from __future__ import annotations

import os

import pytest

from _corpus import CORPUS


def test_the_jld2_corpus_is_found():
    if not CORPUS.is_dir() and not os.environ.get("CI"):
        pytest.skip(f"JLD2 corpus not found at {CORPUS} (set PYFLUX_JLD2_CORPUS)")
    files = sorted(CORPUS.glob("*.jld2"))
    assert len(files) == 20, f"expected the 20 corpus files in {CORPUS}, found {len(files)}"
