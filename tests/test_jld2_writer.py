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


# ---------------------------------------------------------------------------------------------- group layout
def group_layout(path, addr: int) -> dict:
    """The object header of the group at relative address ``addr``, message by message, as JLD2.jl's
    ``load_group`` sees it: (type, size, flags, body) with link targets replaced by their names' lengths."""
    raw = open(path, "rb").read()
    p = 512 + addr
    assert raw[p:p + 4] == b"OHDR" and raw[p + 4] == 2
    flags = raw[p + 5]
    q = p + 6 + (16 if flags & 0x20 else 0) + (4 if flags & 0x10 else 0)
    width = 1 << (flags & 3)
    size = int.from_bytes(raw[q:q + width], "little")
    q += width
    end = q + size
    msgs = []
    while q < end:
        mtype, msize, mflags = raw[q], int.from_bytes(raw[q + 1:q + 3], "little"), raw[q + 3]
        body = raw[q + 4:q + 4 + msize]
        msgs.append((mtype, msize, mflags, body[:-8] if mtype == 0x06 else body))   # links: drop the address
        q += 4 + msize
    return {"flags": flags, "messages": msgs, "end": end - p}


def root_and_types(path):
    reader, _ = open_file(path)
    h = reader.h5
    return h.root, h.links(h.root).get("_types")


def continuation_slot(layout) -> bool:
    """JLD2's load_group (src/groups.jl): the continuation message goes in a NIL message that is exactly the
    last 20 bytes of the chunk; without it, JLD2 0.4 refuses to add links and 0.5+ overwrite the last message."""
    last = layout["messages"][-1]
    return last[:3] == (0x00, 16, 0) and last[3] == b"\0" * 16


@pytest.mark.parametrize("name", ["PavelNikolaichev__JuliaHEPNet__model.jld2",           # JLD2 0.4.46
                                  "MichalKobiela__reinforce-circuits__mymodel.jld2"])   # JLD2 >= 0.5
def test_group_headers_laid_out_as_jld2_does(tmp_path, name):
    """Issue 14 #10: root and `_types` headers end with JLD2's reserve NIL (room for 4 links, src/groups.jl
    group_extra_space) and the 20-byte continuation placeholder, message for message as in the JLD2.jl file."""
    src = CORPUS / name
    if not src.exists():
        pytest.skip("corpus not available")
    out = tmp_path / "resaved.jld2"
    jld2.save(out, model_state=jld2.load(src, "model_state"))
    theirs, ours = root_and_types(src), root_and_types(out)
    for t_addr, o_addr in zip(theirs, ours):
        t, o = group_layout(src, t_addr), group_layout(out, o_addr)
        if name.startswith("Pavel"):          # same JLD2 generation, same types: identical layout
            assert o == t
        else:                                 # >= 0.5 commits a few more types (Tuple{} ghosts): same shape
            assert [m[:3] for m in o["messages"][:2]] == [m[:3] for m in t["messages"][:2]]
            assert o["messages"][-1] == t["messages"][-1]
        assert continuation_slot(o)


def test_pfc_save_headers_match_jld2_layout(tmp_path):
    """pfc.save of the model in the Pavel file: `_types` header identical in layout to JLD2.jl's; the root
    differs only by the extra `model_arch` link, which uses one of the 4 estimated link slots of the reserve
    NIL (24 bytes), as JLD2's jldsave with two keys would."""
    src = CORPUS / "PavelNikolaichev__JuliaHEPNet__model.jld2"
    if not src.exists():
        pytest.skip("corpus not available")
    import pyflux_compress as pfc

    out = tmp_path / "m.jld2"
    with pytest.warns(UserWarning, match="activations"):
        model = pfc.load(src)
    pfc.save(out, model)
    (t_root, t_types), (o_root, o_types) = root_and_types(src), root_and_types(out)
    assert group_layout(out, o_types) == group_layout(src, t_types)
    t, o = group_layout(src, t_root), group_layout(out, o_root)
    arch = [m for m in o["messages"] if m[0] == 0x06 and b"model_arch" in m[3]]
    assert len(arch) == 1
    rest = [m for m in o["messages"] if m not in arch]
    assert [m[:2] for m in rest[:-2]] == [m[:2] for m in t["messages"][:-2]]
    assert rest[-2][1] == t["messages"][-2][1] - 24        # the reserve shrank by one estimated link (24 bytes)
    assert rest[-1] == t["messages"][-1] and continuation_slot(o)


def test_groups_with_many_links_keep_only_the_placeholder(tmp_path):
    path = tmp_path / "g.jld2"
    jld2.save(path, **{f"k{i}": i for i in range(6)})
    root, _ = root_and_types(path)
    layout = group_layout(path, root)
    assert [m[0] for m in layout["messages"]] == [0x02, 0x0A] + [0x06] * 6 + [0x00]
    assert continuation_slot(layout)


# ---------------------------------------------------------------------------------------------- long tuples
def _committed_by_name(path) -> dict:
    reader, _ = open_file(path)
    h = reader.h5
    out = {}
    for addr in h.links(h.links(h.root)["_types"]).values():
        c = reader.committed(addr)
        out[str(c.jtype)] = c
    return out


def test_ntuple_over_10_written_as_vector(tmp_path):
    """Issue 14 #11: JLD2 (>= 0.4.31, src/data/specialcased_types.jl: writeas(NTuple{N,T}) = Vector{T} for
    N > 10) stores long homogeneous tuples as a reference to a Vector: a committed reference datatype with
    julia_type NTuple{N,T} and written_type Core.Array{T,1}. BatchNorm's 11 field names and a Chain of 11+
    identical layers are such tuples."""
    import pyflux_compress as pfc

    bn = tmp_path / "bn.jld2"
    model = pfc.parse("Chain(Conv((3, 3), 1 => 2, relu), BatchNorm(2), flatten, Dense(8 => 2))", seed=0)
    pfc.save(bn, model)
    types = _committed_by_name(bn)
    names_t = "NTuple{11,Core.Symbol}"
    assert names_t in types and "written_type" in types[names_t].attrs
    assert str(types[names_t].written) == "Core.Array{Core.Symbol,1}"
    assert types[names_t].dt.cls == 7 and types[names_t].dt.size == 8          # a reference
    x = np.random.default_rng(0).normal(size=(2, 1, 4, 4)).astype(np.float32)
    np.testing.assert_array_equal(pfc.load(bn)(x), model(x))

    deep = tmp_path / "deep.jld2"
    model = pfc.parse("Chain(" + ", ".join(["Dense(4 => 4, relu)"] * 12) + ")", seed=0)
    pfc.save(deep, model)
    layers_t = [k for k in _committed_by_name(deep) if k.startswith("NTuple{12,")]
    assert len(layers_t) == 1
    with h5py.File(deep, "r") as f:                                  # plain HDF5 reads it too
        ref = f["model_state"][()]["layers"]
        assert f[ref].shape == (12,)
    x = np.ones((3, 4), np.float32)
    np.testing.assert_allclose(pfc.load(deep)(x), model(x), rtol=1e-6)
    assert jld2.load(deep, "model_state")["layers"][11]["weight"].shape == (4, 4)


def test_short_and_mixed_tuples_stay_inline(tmp_path):
    path = tmp_path / "t.jld2"
    jld2.save(path, ten=tuple(range(10)), mixed=tuple([1] * 11 + [2.0]))
    types = _committed_by_name(path)
    assert all("written_type" not in c.attrs for c in types.values())
    assert jld2.load(path, "ten") == tuple(range(10)) and jld2.load(path, "mixed")[-1] == 2.0


def test_large_fields_by_reference_and_oversized_types_refused(tmp_path):
    """Issue 14 #12: a field over 1 KiB in Julia's memory is stored by reference (JLD2 writing_datatypes.jl
    MAX_INLINE_SIZE); a datatype description over 65535 bytes (an HDF5 message limit) is a ValueError naming
    the limit, never OverflowError."""
    def layer(i):
        bias = np.zeros(2, np.float32) if i % 2 else False
        return jld2.NamedTuple({"weight": np.full((2, 2), i, np.float32), "bias": bias, "σ": ()})

    path = tmp_path / "ref.jld2"
    state = jld2.NamedTuple({"layers": tuple(layer(i) for i in range(70))})      # heterogeneous, 70 x 16 bytes
    jld2.save(path, model_state=state)
    back = jld2.load(path, "model_state")
    assert len(back["layers"]) == 70 and back["layers"][69]["weight"][0, 0] == 69
    with h5py.File(path, "r") as f:
        assert f["model_state"].dtype["layers"] == h5py.ref_dtype           # a reference, not an inline compound
    huge = jld2.NamedTuple({"layers": tuple(layer(i) for i in range(1600))})
    with pytest.raises(ValueError, match="65535"):
        jld2.save(tmp_path / "huge.jld2", model_state=huge)
    assert not (tmp_path / "huge.jld2").exists()


def test_header_limits_are_value_errors(tmp_path):
    """Nothing in a header may overflow its 16-bit size field silently or as an OverflowError."""
    with pytest.raises(ValueError, match="too long"):
        jld2.save(tmp_path / "n.jld2", **{"a" * 70000: 1})
    assert not (tmp_path / "n.jld2").exists()


# ---------------------------------------------------------------------------------------------- appending
def jld2_add_link(path, name: str, target: int) -> str:
    """Add a root link the way JLD2.jl does when a file is reopened with ``jldopen(path, "a+")`` (a port of
    ``load_group`` and the existing-group branch of ``save_group``, JLD2 src/groups.jl): into the reserve NIL
    when the link fits, else a continuation message written into the 20-byte placeholder that points at a new
    OCHK chunk at the end of the file. Returns which way was taken."""
    from pyflux_compress.io.jld2._hdf5 import lookup3

    raw = bytearray(open(path, "rb").read())
    root = int.from_bytes(raw[512 + 36:512 + 44], "little")
    start = 512 + root
    flags = raw[start + 5]
    width = 1 << (flags & 3)
    q = start + 6
    size = int.from_bytes(raw[q:q + width], "little")
    q += width
    chunk_end = q + size                        # the checksum follows
    slot, next_link = -1, -1
    while q < chunk_end - 4:
        mtype, msize = raw[q], int.from_bytes(raw[q + 1:q + 3], "little")
        end = q + 4 + msize
        if mtype == 0:
            if slot == -1 and chunk_end - q == 20:
                slot = q
            elif end + 20 == chunk_end and msize >= 13:
                next_link = q
        else:
            slot = -1
        q = end
    nb = name.encode()
    link = bytes([6]) + (12 + len(nb)).to_bytes(2, "little") + b"\0" + bytes([1, 0x10, 1, len(nb)]) + nb + \
        target.to_bytes(8, "little")
    if next_link != -1 and (chunk_end - 20 - next_link >= len(link) + 4 or chunk_end - 20 - next_link == len(link)):
        remaining = chunk_end - 20 - next_link - len(link)
        raw[next_link:next_link + len(link)] = link
        if remaining:
            raw[next_link + len(link):chunk_end - 20] = bytes([0]) + (remaining - 4).to_bytes(2, "little") + \
                b"\0" * (remaining - 3)
        how = "reserve"
    else:
        if slot == -1:
            raise RuntimeError("objects cannot be added to this group because it was created with a previous "
                               "version of JLD2")          # what JLD2 says without a placeholder
        cont = len(raw)
        extra = 3 * 24                                       # group_extra_space: 4 estimated links - 1 written
        chunk = b"OCHK" + link + bytes([0]) + (extra - 4).to_bytes(2, "little") + b"\0" * (extra - 3) + \
            bytes([0, 16, 0, 0]) + b"\0" * 16
        chunk += lookup3(chunk).to_bytes(4, "little")
        raw[slot:slot + 20] = bytes([0x10, 16, 0, 0]) + (cont - 512).to_bytes(8, "little") + \
            len(chunk).to_bytes(8, "little")
        raw += chunk
        how = "continuation"
    raw[chunk_end:chunk_end + 4] = lookup3(bytes(raw[start:chunk_end])).to_bytes(4, "little")
    raw[512 + 28:512 + 36] = len(raw).to_bytes(8, "little")                  # superblock end-of-file
    raw[512 + 44:512 + 48] = lookup3(bytes(raw[512:512 + 44])).to_bytes(4, "little")
    open(path, "wb").write(bytes(raw))
    return how


def test_jld2_can_append_to_our_files(tmp_path):
    """Issue 14 #10: JLD2.jl opening our file with "a+" finds room for new keys: first the reserve NIL, then the
    continuation placeholder. Every key stays readable, by our reader and by HDF5 (h5py)."""
    import pyflux_compress as pfc

    path = tmp_path / "m.jld2"
    model = pfc.parse("Chain(Dense(4 => 3, relu), Dense(3 => 2))", seed=0)
    pfc.save(path, model)
    arch = root_and_types(path)[0]
    reader, _ = open_file(path)
    target = reader.h5.links(reader.h5.root)["model_arch"]
    assert jld2_add_link(path, "archcopy", target) == "reserve"      # room for a 4th link of an 8-byte name
    assert jld2_add_link(path, "arch3", target) == "continuation"
    back = jld2.load(path)
    assert back["archcopy"] == back["arch3"] == back["model_arch"] == str(model)
    x = np.ones((2, 4), np.float32)
    np.testing.assert_array_equal(pfc.load(path)(x), model(x))
    with h5py.File(path, "r") as f:
        assert {"archcopy", "arch3", "model_arch", "model_state", "_types"} <= set(f.keys())
    assert arch == root_and_types(path)[0]
