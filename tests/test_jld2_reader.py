"""Reader tests against the real JLD2 corpus (/work/shared/corpus_jld2, described in its SOURCES.md)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pyflux_compress.io import jld2
from pyflux_compress.io.jld2 import MISSING, Ghost, JLD2FormatError, JuliaStruct, NamedTuple

from _corpus import CORPUS
FILES = sorted(CORPUS.glob("*.jld2")) if CORPUS.is_dir() else []
pytestmark = pytest.mark.skipif(not FILES, reason="JLD2 corpus not available")
H5PY_CANNOT_OPEN = {"JonasIsensee__JLD2TestFiles__artifacts__readas_foo_sin.jld2"}


def corpus(name: str) -> Path:
    return CORPUS / name


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name[:40])
def test_every_corpus_file_loads(path):
    values = jld2.load(path)
    assert values and "_types" not in values


def _h5_arrays(obj, ours, f, out, depth=0):
    """Pair every h5py-readable numeric array (following references) with our value at the same place."""
    import h5py

    if depth > 6:
        return
    if isinstance(obj, h5py.Dataset):
        if obj.shape and h5py.check_ref_dtype(obj.dtype) is not None and isinstance(ours, np.ndarray):
            refs = obj[()]                       # reference array: element-wise, ours is Julia-shaped
            for idx in np.ndindex(refs.shape):
                _h5_arrays(refs[idx], ours.T[idx], f, out, depth + 1)
            return
        if obj.shape is None or obj.dtype.kind not in "biuf" or obj.dtype.names:
            if obj.dtype.names and obj.shape == ():
                _h5_arrays(obj[()], ours, f, out, depth + 1)
            return
        out.append((obj[()], ours))
    elif isinstance(obj, np.void) and obj.dtype.names:
        for name in obj.dtype.names:
            sub = _field(ours, name)
            if sub is not None:
                _h5_arrays(obj[name], sub, f, out, depth + 1)
    elif isinstance(obj, h5py.Reference) and obj:
        _h5_arrays(f[obj], ours, f, out, depth + 1)


def _field(ours, name):
    if isinstance(ours, NamedTuple) and name in ours:
        return ours[name]
    if isinstance(ours, JuliaStruct) and name in ours.fields:
        return ours.fields[name]
    if isinstance(ours, tuple) and name.isdigit() and int(name) <= len(ours):
        return ours[int(name) - 1]
    return None


@pytest.mark.parametrize("path", [p for p in FILES if p.name not in H5PY_CANNOT_OPEN], ids=lambda p: p.name[:40])
def test_arrays_equal_h5py_transposed(path):
    h5py = pytest.importorskip("h5py")
    ours = jld2.load(path)
    pairs = []
    with h5py.File(path, "r") as f:
        for name, value in ours.items():
            _h5_arrays(f[name], value, f, pairs)
    for theirs, mine in pairs:
        if np.ndim(theirs) == 0:
            assert np.asarray(mine).item() == np.asarray(theirs).item()
        else:
            assert isinstance(mine, np.ndarray) and mine.shape == theirs.T.shape
            np.testing.assert_array_equal(mine, theirs.T)


def test_h5py_cross_check_actually_compares_arrays():
    h5py = pytest.importorskip("h5py")
    path = corpus("PavelNikolaichev__JuliaHEPNet__model.jld2")
    pairs = []
    with h5py.File(path, "r") as f:
        _h5_arrays(f["model_state"], jld2.load(path, "model_state"), f, pairs)
    assert len(pairs) == 4
    path = corpus("OsmanMutlu__Comp508-final__model.jld2")        # reference array of 8 arrays
    pairs = []
    with h5py.File(path, "r") as f:
        _h5_arrays(f["wcnn"], jld2.load(path, "wcnn"), f, pairs)
    assert len(pairs) == 8


def test_pavel_flux_state_tree():
    st = jld2.load(corpus("PavelNikolaichev__JuliaHEPNet__model.jld2"), "model_state")
    assert list(st.keys()) == ["layers"] and len(st.layers) == 2
    d1, d2 = st.layers
    assert list(d1.keys()) == ["weight", "bias", "σ"] and d1.σ == ()
    assert d1.weight.shape == (64, 3) and d1.bias.shape == (64,) and d1.weight.dtype == np.float32
    assert d2.weight.shape == (1, 64) and d2.bias.shape == (1,)
    assert d1.weight.flags.f_contiguous


def test_michal_flux_state_tree_with_trailing_ghost():
    st = jld2.load(corpus("MichalKobiela__reinforce-circuits__mymodel.jld2"), "model_state")
    assert len(st.layers) == 3 and st.layers[2] == ()
    assert st.layers[0].weight.shape == (16, 1) and st.layers[1].weight.shape == (5, 16)
    assert st.layers[1]["σ"] == ()


def test_lightglow_bool_bias():
    st = jld2.load(corpus("Lightglow51__777__model.jld2"), "model_state")
    dense, only = st.layers
    assert dense.bias is False and dense.weight.shape == (1, 2) and only == ()


def test_struct_model_conv_and_activation_type_params():
    ae = jld2.load(corpus("MatteoFriedrich__Vector-quantized-VAE__models__autoencoder7x7x16.jld2"), "autoencoder")
    enc = ae.layers[0]
    conv = enc.layers[0]
    assert conv.julia_type.name == "Flux.Conv" and str(conv.julia_type.params[2]) == "Base.#identity"
    assert conv.weight.shape == (4, 4, 1, 16) and conv.stride == (2, 2) and conv.pad == (1, 1, 1, 1)
    assert enc.layers[2] == Ghost("NNlib.#relu")
    assert enc.layers[1].julia_type.name == "Flux.BatchNorm"


def test_dpshade_struct_chain():
    m = jld2.load(corpus("dpshade22__JuliaMidiParsing__trained_model.jld2"), "model")
    assert m.julia_type.name == "Flux.Chain"
    assert isinstance(m.layers[1], Ghost) and m.layers[1].type_name.startswith("Main.#")
    dense = m.layers[2]
    assert str(dense.julia_type.params[0]) == "Base.#identity" and dense.weight.shape == (1, 64)


def test_shared_references_stay_shared():
    p = jld2.load(corpus("tristanth03__UROP__params_m_3LS_epo10.jld2"), "model_params")
    order = list(p.order.data)
    assert [a.shape for a in order] == [(60, 784), (60,), (60, 60), (60,), (10, 60), (10,)]
    keys = [k for k, _ in p.params.dict]
    assert all(any(k is a for a in order) for k in keys)


def test_singleton_fields_and_32bit_ints():
    ms = jld2.load(corpus("JonasIsensee__JLD2TestFiles__artifacts__singleton_struct_fields.jld2"), "ms")
    assert list(ms.fields) == ["a", "b", "c", "d"]
    assert ms.b is None and ms.c is MISSING and ms.a == 1 and ms.a.dtype == np.int32


def test_readas_file_hdf5_cannot_open():
    foo = jld2.load(corpus("JonasIsensee__JLD2TestFiles__artifacts__readas_foo_sin.jld2"), "foo")
    assert foo.type_name == "Main.Readas.Foo{Base.#sin}" and foo.fun == Ghost("Base.#sin")


def test_dicts_both_encodings():
    new = jld2.load(corpus("JonasIsensee__JLD2TestFiles__artifacts__struct_reconstruction.jld2"))
    assert new["ds"]["a"].type_name == "Main.TestStruct" and new["ds"]["a"].a == 1
    assert new["tms"][0] == 1 and new["tms"][1].type_name == "Main.MTestStruct"
    old = jld2.load(corpus("paulxshen__NeuralDFT.jl__SAD.jld2"), "SAD")
    assert isinstance(old, dict) and all(isinstance(k, int) for k in old)
    entry = next(iter(old.values()))
    assert list(entry.keys()) == ["R", "dr"] and entry.R.shape == (41,)


def test_groups_scalars_tuples_and_names():
    g = jld2.load(corpus("JonasIsensee__JLD2TestFiles__artifacts__unionall_typeparam__blob1fdaa247.jld2"))
    assert g == {"a": 1, "b": {"c": 2, "d": {"e": 3, "f": {"g": 4}}}}
    assert jld2.load(corpus("JonasIsensee__JLD2TestFiles__artifacts__unionall_typeparam__blob1fdaa247.jld2"),
                     "b/d/f/g") == 4
    t = jld2.load(corpus("JuliaIO__JLD2.jl__v0.6.4__test.jld2"))
    assert t["a"] == 42 and t["c"] == (1, 2) and t["b"].tolist() == [1, 2, 3, 4, 5]
    with pytest.raises(KeyError, match="nope"):
        jld2.load(corpus("JuliaIO__JLD2.jl__v0.6.4__test.jld2"), "nope")


def test_reference_arrays_and_legacy_header():
    w = jld2.load(corpus("OsmanMutlu__Comp508-final__model.jld2"), "wcnn")
    assert w.shape == (8,) and w[0].shape == (5, 5, 1, 20) and w[4].shape == (500, 800)
    mag = jld2.load(corpus("edwinb-ai__IsingRBM__magnetization.jld2"), "full_magnetization")
    assert mag.shape == (2, 20) and mag[0, 0].shape == (2,)
    net = jld2.load(corpus("jaesunglee9__simple_mnist.jl__network.jld2"), "network")
    assert [a.shape for a in net.W] == [(32, 784), (10, 32)]


def test_strings_ghost_top_level_and_plain_file():
    tree = jld2.load(corpus("savindumahasen__Classification-Project-Based-on-Iris-dataset-__model.jld2"), "model")
    assert tree.rng == Ghost("Random._GLOBAL_RNG")
    st = jld2.load(corpus("interseismic__eikonet_julia__model.jld2"), "st")
    assert isinstance(st, NamedTuple) and all(isinstance(v, NamedTuple) for v in st.values())
    assert len(st.layer_1) == 0 and list(st.layer_3.keys()) == ["layer_1", "layer_2"]
    assert len(st.layer_3.layer_1) == 0
    plain = jld2.load(corpus("roshankarande__ECE-285-Proj__params.jld2"))
    assert plain["W1"].shape == (32, 784) and plain["b2"].shape == (10,)


def test_large_contiguous_arrays_are_memory_mapped():
    meta = jld2.load(corpus("tristanth03__UROP__test.jld2"), "metadata")
    assert meta.shape == (51370,)     # 205 kB: below the mmap threshold, a plain copy
    w = jld2.load(corpus("hamzaco__Comp-541-Term-Project__best_model.jld2"), "q_network1")
    assert isinstance(w, JuliaStruct)


def test_mmap_used_for_big_arrays(tmp_path):
    a = np.arange(600_000, dtype=np.float32).reshape(600, 1000)
    jld2.save(tmp_path / "big.jld2", a=a)
    b = jld2.load(tmp_path / "big.jld2", "a")
    assert isinstance(b, np.memmap) and b.shape == (600, 1000)
    np.testing.assert_array_equal(b, a)
    b[0, 0] = -1                      # copy-on-write: the file is untouched
    assert jld2.load(tmp_path / "big.jld2", "a")[0, 0] == 0


def test_plain_hdf5_files_superblock_v0_and_v2(tmp_path):
    h5py = pytest.importorskip("h5py")
    x = np.arange(12.0).reshape(3, 4)
    for libver in ("earliest", "latest"):
        p = tmp_path / f"{libver}.h5"
        with h5py.File(p, "w", libver=libver) as f:
            f["x"] = x
            f.create_group("g")["y"] = np.int32(5)
        out = jld2.load(p)
        np.testing.assert_array_equal(out["x"], x.T)
        assert out["g"]["y"] == 5


def test_unsupported_features_raise_format_error(tmp_path):
    """Dense (fractal-heap) link storage is not read: a clear error naming the file, not a wrong result."""
    h5py = pytest.importorskip("h5py")
    p = tmp_path / "dense.h5"
    with h5py.File(p, "w", libver="latest") as f:
        for k in range(40):                          # > 8 links: HDF5 switches the group to dense storage
            f[f"x{k}"] = np.arange(3)
    with pytest.raises(JLD2FormatError, match=f"{p}.*dense link storage"):
        jld2.load(p)


@pytest.mark.parametrize("data", [b"", b"not a jld2 file at all" * 40, b"\x89HDF\r\n\x1a\n" + b"\x02" * 40])
def test_garbage_raises_format_error(tmp_path, data):
    p = tmp_path / "bad.jld2"
    p.write_bytes(data)
    with pytest.raises(JLD2FormatError, match="at byte"):
        jld2.load(p)


def test_truncated_file_names_offset(tmp_path):
    raw = corpus("PavelNikolaichev__JuliaHEPNet__model.jld2").read_bytes()
    p = tmp_path / "t.jld2"
    p.write_bytes(raw[:7000])
    with pytest.raises(JLD2FormatError, match=r"at byte \d+"):
        jld2.load(p)


def test_single_chunk_layout_with_deflate_and_shuffle(tmp_path):
    """JLD2's compressed layout (v4, single-chunk index, filter pipeline), produced here with h5py."""
    h5py = pytest.importorskip("h5py")
    a = np.arange(1000, dtype=np.float32).reshape(25, 40)
    p = tmp_path / "c.h5"
    with h5py.File(p, "w", libver=("v110", "v110")) as f:
        f.create_dataset("z", data=a, chunks=a.shape, compression="gzip", shuffle=True)
        f.create_dataset("u", data=a, chunks=a.shape)
    out = jld2.load(p)
    np.testing.assert_array_equal(out["z"], a.T)
    np.testing.assert_array_equal(out["u"], a.T)


def test_restructure_and_recur_struct_files():
    rb = jld2.load(corpus("tristanth03__UROP__test.jld2"), "rebuild")
    assert rb.julia_type.name == "Optimisers.Restructure" and rb.length == 51370
    assert rb.offsets.layers[1].bias == 50700 and rb.offsets.layers[3] == ()      # Int64 offsets inline
    dense = rb.model.layers[0]
    assert str(dense.julia_type.params[0]) == "NNlib.#σ" and dense.weight.shape == (60, 784)
    assert rb.model.layers[3] == Ghost("NNlib.#softmax")
    m = jld2.load(corpus("dpshade22__JuliaMidiParsing__trained_model.jld2"), "model")
    assert m.layers[0].julia_type.name == "Flux.Recur" and list(m.layers[0].fields) == ["cell", "state"]


@pytest.mark.parametrize("libver", ["earliest", ("v108", "v108")])
def test_object_header_continuation_chunks(tmp_path, libver):
    """Attributes added in later sessions land in continuation chunks (v1 raw chunks / v2 'OCHK')."""
    h5py = pytest.importorskip("h5py")
    from pyflux_compress.io.jld2._hdf5 import MSG_ATTRIBUTE
    from pyflux_compress.io.jld2._reader import open_file

    p = tmp_path / "cont.h5"
    with h5py.File(p, "w", libver=libver) as f:
        gcpl = h5py.h5p.create(h5py.h5p.GROUP_CREATE)
        gcpl.set_attr_phase_change(100, 50)            # keep attributes in the header (no dense storage)
        h5py.h5g.create(f.id, b"g", gcpl=gcpl)
    for k in range(7):
        with h5py.File(p, "a", libver=libver) as f:
            f["g"].attrs[f"a{k}"] = np.arange(k + 100)
            f[f"x{k}"] = np.arange(100) * k                # keeps g's header away from the end of file
    if libver != "earliest":
        assert p.read_bytes().count(b"OCHK") > 0
    reader, _ = open_file(p)
    header = reader.h5.header(reader.h5.links(reader.h5.root)["g"])
    assert sorted(reader._attributes(header)) == [f"a{k}" for k in range(7)]
    assert jld2.load(p, "x6").tolist() == (np.arange(100) * 6).tolist()
