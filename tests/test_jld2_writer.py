"""Writer tests: round trips, h5py verification of every written file, fidelity against real Flux.state files."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from pyflux_compress.io import jld2
from pyflux_compress.io.jld2 import MISSING, Ghost, JuliaType, NamedTuple
from pyflux_compress.io.jld2._reader import open_file

from _corpus import CORPUS
h5py = pytest.importorskip("h5py")


def h5_check(path: Path, values: dict) -> None:
    """h5py opens the file (verifying every checksum) and reads each array equal to ours (transposed)."""
    with h5py.File(path, "r") as f:
        assert sorted(k for k in f if k != "_types") == sorted(values)
        for name, v in values.items():
            _h5_equal(f, f[name], v)


def _h5_equal(f, node, v) -> None:
    if isinstance(v, np.ndarray):
        got = node[()] if isinstance(node, h5py.Dataset) else f[node][()]
        if v.ndim == 0:
            assert np.asarray(got).reshape(()) == v
        else:
            np.testing.assert_array_equal(np.asarray(got).T, v)
    elif isinstance(v, dict):
        for k, sub in v.items():
            _h5_equal(f, node[k], sub)
    elif isinstance(v, (NamedTuple, tuple)):
        rec = node[()] if isinstance(node, h5py.Dataset) else node
        names = list(v.keys()) if isinstance(v, NamedTuple) else [str(i + 1) for i in range(len(v))]
        for name, sub in zip(names, v.values() if isinstance(v, NamedTuple) else v):
            if name in (rec.dtype.names or ()):
                _h5_equal(f, rec[name], sub)
    elif isinstance(v, str) and isinstance(node, h5py.Dataset):
        assert node[()].decode() == v


def roundtrip(tmp_path, **values):
    p = tmp_path / "rt.jld2"
    jld2.save(p, **values)
    h5_check(p, values)
    return jld2.load(p)


def test_roundtrip_arrays_all_dtypes(tmp_path, rng):
    values = {f"a_{dt}": (rng.standard_normal((3, 4, 2)) * 50).astype(dt)
              for dt in ["float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16",
                         "uint32", "uint64"]}
    values["b"] = rng.standard_normal(5) > 0
    values["big"] = rng.standard_normal((300, 40)).astype(np.float32)     # > 8 kB: contiguous
    values["empty"] = np.zeros((0, 3), np.float32)
    values["zero_dim"] = np.array(2.5)
    values["c_order_view"] = rng.standard_normal((6, 5))[:, ::2]
    out = roundtrip(tmp_path, **values)
    for k, v in values.items():
        assert out[k].dtype == v.dtype and out[k].shape == v.shape, k
        np.testing.assert_array_equal(out[k], v)


def test_roundtrip_values(tmp_path):
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    tree = NamedTuple(layers=(NamedTuple(weight=w, bias=False, σ=()), (), NamedTuple(x=1, y=2.5, s="héllo",
                                                                                         n=None, m=MISSING)))
    out = roundtrip(tmp_path, tree=tree, n=7, f=1.5, t=True, s="Chain(Dense(3 => 2))", g={"x": w, "h": {"y": 3}},
                    f32=np.float32(0.25), nothing=None, fn=Ghost("NNlib.#relu"), tup=(1, 2, 3))
    assert out["tree"] == tree
    assert out["n"] == 7 and out["f"] == 1.5 and out["t"] is True and out["s"] == "Chain(Dense(3 => 2))"
    assert out["f32"] == np.float32(0.25) and out["f32"].dtype == np.float32
    assert out["nothing"] is None and out["fn"] == Ghost("NNlib.#relu") and out["tup"] == (1, 2, 3)
    np.testing.assert_array_equal(out["g"]["x"], w)
    assert out["g"]["h"]["y"] == 3


def test_shared_arrays_written_once(tmp_path):
    w = np.ones((4, 4), np.float32)
    out = roundtrip(tmp_path, t=NamedTuple(a=w, b=(w, w)))["t"]
    assert out.a is out.b[0] is out.b[1]


def test_bad_values_rejected_before_writing(tmp_path):
    p = tmp_path / "x.jld2"
    jld2.save(p, a=np.zeros(2))
    before = p.read_bytes()
    with pytest.raises(ValueError, match="cannot write"):
        jld2.save(p, a=NamedTuple(x=object()))
    with pytest.raises(ValueError, match="dtype"):
        jld2.save(p, a=np.array(["x"]))
    with pytest.raises(ValueError, match="not allowed"):
        jld2.save(p, _types=1)
    assert p.read_bytes() == before and sorted(x.name for x in tmp_path.iterdir()) == ["x.jld2"]


def test_write_is_atomic_on_failure(tmp_path, monkeypatch):
    from pyflux_compress.io.jld2 import _writer

    p = tmp_path / "x.jld2"
    jld2.save(p, a=np.zeros(2))
    before = p.read_bytes()

    def boom(self, links):
        raise OSError("disk full")
    monkeypatch.setattr(_writer.Writer, "close", boom)
    with pytest.raises(OSError, match="disk full"):
        jld2.save(p, a=np.ones(3))
    assert p.read_bytes() == before and [x.name for x in tmp_path.iterdir()] == ["x.jld2"]


def test_written_file_has_umask_permissions(tmp_path):
    p = tmp_path / "perm.jld2"
    jld2.save(p, a=1)
    mask = os.umask(0)
    os.umask(mask)
    assert p.stat().st_mode & 0o777 == 0o666 & ~mask


def test_header_and_superblock(tmp_path):
    p = tmp_path / "h.jld2"
    jld2.save(p, a=1)
    raw = p.read_bytes()
    assert raw.startswith(b"HDF5-based Julia Data Format, version 0.1.1\x00")
    assert raw[512:520] == b"\x89HDF\r\n\x1a\n" and raw[520] == 2
    assert int.from_bytes(raw[512 + 28:512 + 36], "little") == len(raw)      # EOF = absolute length (as JLD2)


# ---------------------------------------------------------------------------------------------- fidelity
FLUX_STATE_FILES = ["PavelNikolaichev__JuliaHEPNet__model.jld2",          # JLD2 0.4.46: byte-identical target
                    "MichalKobiela__reinforce-circuits__mymodel.jld2",    # JLD2 >= 0.5
                    "Lightglow51__777__model.jld2"]                       # JLD2 <= 0.4.40, Bool bias


def committed_types(path) -> list[dict]:
    reader, mm = open_file(path)
    h = reader.h5
    out = []
    for addr in h.links(h.links(h.root)["_types"]).values():
        c = reader.committed(addr)
        out.append({"dt": c.dt.raw, "jt": c.jtype, "attrs": set(c.attrs), "ghost": "empty" in c.attrs})
    return out


def normalize(t) -> str:
    """Julia-equal spelling: NTuple{N,T} -> Tuple{T,...}, Core.Tuple -> Tuple (all denote the same type)."""
    if isinstance(t, JuliaType):
        params = [normalize(p) for p in t.params]
        name = t.name
        if name == "NTuple" and len(t.params) == 2:
            name, params = "Tuple", [params[1]] * int(t.params[0])
        if name == "Core.Tuple":
            name = "Tuple"
        return name + ("{" + ",".join(params) + "}" if params else "")
    return str(t)


def dataset_shapes(path) -> list:
    shapes = []
    with h5py.File(path, "r") as f:
        def walk(rec):
            if isinstance(rec, h5py.Reference):
                shapes.append((f[rec].dtype.str, f[rec].shape))
            elif isinstance(rec, np.void):
                for n in rec.dtype.names:
                    walk(rec[n])
        walk(f["model_state"][()])
        names = f["model_state"].dtype.descr
    return shapes, names


@pytest.mark.parametrize("name", FLUX_STATE_FILES)
def test_fidelity_against_real_flux_state_files(tmp_path, name):
    src = CORPUS / name
    if not src.exists():
        pytest.skip("corpus not available")
    state = jld2.load(src, "model_state")
    out = tmp_path / "resaved.jld2"
    jld2.save(out, model_state=state)
    assert jld2.load(out, "model_state") == state
    theirs = [t for t in committed_types(src) if not t["ghost"]]   # JLD2 >= 0.5 commits Tuple{} ghosts
    ours = committed_types(out)
    # byte-identical committed datatype definitions, in the same commit order
    assert [t["dt"] for t in ours] == [t["dt"] for t in theirs]
    if name.startswith("Pavel"):        # same JLD2 generation: julia_type strings byte-for-byte
        assert [str(t["jt"]) for t in ours] == [str(t["jt"]) for t in theirs]
        assert [t["attrs"] for t in ours] == [t["attrs"] for t in theirs]
    else:                               # other generations: same Julia types, different tuple spellings
        assert [normalize(t["jt"]) for t in ours] == [normalize(t["jt"]) for t in theirs]
    assert dataset_shapes(out) == dataset_shapes(src)


@pytest.mark.parametrize("shape,order", [((37, 300), "C"), ((37, 300), "F"), ((5, 6, 7), "C"), ((600, 3), "C"),
                                         ((11,), "C"), ((3, 4, 5, 6), "F")])
def test_julia_chunks_are_column_major_bytes(rng, shape, order):
    from pyflux_compress.io.jld2._writer import julia_chunks

    a = np.asarray(rng.standard_normal(shape), order=order).astype(np.float32, order=order)
    got = b"".join(bytes(c) for c in julia_chunks(a, np.dtype(np.float32), target=256))
    assert got == a.tobytes(order="F")
    strided = rng.standard_normal((8, 9))[::2, 1::3]           # neither C nor F contiguous
    assert b"".join(bytes(c) for c in julia_chunks(strided, np.dtype("<f8"), target=16)) == strided.tobytes("F")
