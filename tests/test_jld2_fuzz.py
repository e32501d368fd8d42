"""Fuzz the reader with mutated and truncated corpus files (and h5py chunked/compressed files): only
JLD2FormatError may escape, fast, and never from the last-resort handler ("... while decoding").

Four hypothesis tests x 2,500 derandomized examples = 10,000 cases (deadline 1 s each).
"""
from __future__ import annotations

import random
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from pyflux_compress.io.jld2 import JLD2FormatError, loads  # noqa: E402

from _corpus import CORPUS
SMALL = ["PavelNikolaichev__JuliaHEPNet__model.jld2", "MichalKobiela__reinforce-circuits__mymodel.jld2",
         "Lightglow51__777__model.jld2", "JonasIsensee__JLD2TestFiles__artifacts__readas_foo_sin.jld2",
         "JonasIsensee__JLD2TestFiles__artifacts__singleton_struct_fields.jld2",
         "JonasIsensee__JLD2TestFiles__artifacts__struct_reconstruction.jld2",
         "JonasIsensee__JLD2TestFiles__artifacts__unionall_typeparam__blob1fdaa247.jld2",
         "JuliaIO__JLD2.jl__v0.6.4__test.jld2", "paulxshen__NeuralDFT.jl__SAD.jld2",
         "edwinb-ai__IsingRBM__magnetization.jld2"]
FILES = [(CORPUS / n).read_bytes() for n in SMALL if (CORPUS / n).exists()]


def _chunked_seeds() -> list[bytes]:
    """HDF5 files exercising the chunked-storage paths (B-tree v1/v2, fixed array, filters, fill values)."""
    import tempfile

    try:
        import h5py
        import numpy as np
    except ImportError:
        return []
    out = []
    a = np.arange(600, dtype="<f4").reshape(20, 30)
    with tempfile.TemporaryDirectory() as d:
        for libver in ("earliest", "latest"):
            p = Path(d) / f"{libver}.h5"
            with h5py.File(p, "w", libver=libver) as f:
                f.create_dataset("deflate", data=a, chunks=(7, 11), compression="gzip", shuffle=True)
                f.create_dataset("bt2", data=a, chunks=(6, 7), maxshape=(None, None), compression="gzip")
                f.create_dataset("fill", shape=(5, 6), dtype="f8", fillvalue=1.5)
                f.create_dataset("ea", data=a, chunks=(4, 5), maxshape=(None, 30))
            out.append(p.read_bytes())
    return out


if FILES:
    FILES += _chunked_seeds()
pytestmark = pytest.mark.skipif(not FILES, reason="JLD2 corpus not available")
FUZZ = settings(max_examples=2500, derandomize=True, deadline=1000, database=None,
                suppress_health_check=list(HealthCheck))


def check(data: bytes) -> None:
    try:
        loads(data)
    except JLD2FormatError as err:
        assert "at byte" in str(err) or "nested too deeply" in str(err), str(err)


@FUZZ
@given(st.integers(0, 2 ** 63))
def test_byte_mutations(seed):
    """1-8 random bytes changed. One integer drawn per case keeps hypothesis' own cost low; the edits are
    derived from it with a seeded generator (reproducible, like derandomize)."""
    rnd = random.Random(seed)
    data = bytearray(FILES[rnd.randrange(len(FILES))])
    for _ in range(rnd.randint(1, 8)):
        data[rnd.randrange(512, len(data))] = rnd.randrange(256)   # keep the userblock: hit HDF5 structures
    check(bytes(data))


@FUZZ
@given(st.integers(0, 10 ** 9), st.integers(0, 10 ** 9))
def test_truncations(which, cut):
    data = FILES[which % len(FILES)]
    check(data[:cut % len(data)])


@FUZZ
@given(st.integers(0, 2 ** 63))
def test_overwrite_ranges(seed):
    """A run of 1-16 random bytes overwritten (a message header, an address, a size ...)."""
    rnd = random.Random(seed)
    data = bytearray(FILES[rnd.randrange(len(FILES))])
    p = rnd.randrange(512, len(data))
    blob = bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 16)))
    data[p:p + len(blob)] = blob
    check(bytes(data))


@FUZZ
@given(st.integers(0, 2 ** 63))
def test_integer_fields_pushed_to_extremes(seed):
    """1-8 bytes set to 0x00 / 0x01 / 0x7F / 0x80 / 0xFF: sizes, counts and addresses at 0 or huge
    (allocation, loop and bounds guards)."""
    rnd = random.Random(seed)
    data = bytearray(FILES[rnd.randrange(len(FILES))])
    width = rnd.randint(1, 8)
    p = rnd.randrange(512, len(data) - width)
    data[p:p + width] = bytes([rnd.choice([0, 1, 0x7F, 0x80, 0xFF])]) * width
    check(bytes(data))
