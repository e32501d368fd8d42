"""The one atomic writer (``pyflux_compress._files.atomic_write``) and the package's writers that use it.

Checked: every writer (JLD2 checkpoint, archive, ONNX) creates files with the same permissions, those of any file
the user creates under the current umask; the file and its folder are fsync-ed; a temp file left by a dead writer
is removed by the next write to the same path (and nothing else is); an exception inside the block leaves the
old file untouched and no temp file; a missing folder raises an error naming the user's path. The kill -9
campaign is ``benchmarks/kill_writes.py`` (too slow for the unit suite).
"""
from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import sys

import pytest

import pyflux_compress as pfc
from pyflux_compress._files import TEMP_SUFFIX, MissingFolderError, atomic_write, write_atomic


@contextlib.contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _model():
    return pfc.parse("Chain(Dense(6 => 5, relu), Dense(5 => 3))", seed=0)


WRITERS = {
    "jld2": lambda path: pfc.save(str(path), _model()),
    "pfcz": lambda path: pfc.save_compressed(str(path), _model()),
    "onnx": lambda path: pfc.export_onnx(_model(), str(path)),
    "atomic_write": lambda path: write_atomic(path, b"report"),
}


def _temps(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(TEMP_SUFFIX))


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077])
def test_every_writer_gives_the_same_permissions_under_a_umask(tmp_path, mask):
    modes = {}
    with umask(mask):
        for ext, write in WRITERS.items():
            path = tmp_path / f"m.{ext}"
            write(path)
            modes[ext] = stat.S_IMODE(path.stat().st_mode)
            # a plain open() under the same umask: what the user expects of any new file
        with open(tmp_path / "plain", "wb"):
            pass
    plain = stat.S_IMODE((tmp_path / "plain").stat().st_mode)
    assert plain == 0o666 & ~mask
    assert modes == {ext: plain for ext in WRITERS}, modes
    assert _temps(tmp_path) == []


def test_overwrite_takes_the_umask_not_mkstemps_0600(tmp_path):
    path = tmp_path / "m.jld2"
    with umask(0o022):
        WRITERS["jld2"](path)
        os.chmod(path, 0o600)
        WRITERS["jld2"](path)  # replaced by a new file: a new file's permissions
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


@pytest.mark.parametrize("ext", sorted(WRITERS))
def test_file_and_folder_are_fsynced(tmp_path, monkeypatch, ext):
    synced = []
    real_fsync = os.fsync

    def spy(fd):
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    WRITERS[ext](tmp_path / f"m.{ext}")
    assert False in synced and True in synced, synced  # the file's data, then the folder (the rename)


@pytest.mark.parametrize("ext", sorted(WRITERS))
def test_stale_temp_of_a_dead_writer_is_cleaned_by_the_next_write(tmp_path, ext):
    path = tmp_path / f"m.{ext}"
    dead = tmp_path / f".{path.name}.{_dead_pid()}.deadbeef{TEMP_SUFFIX}"
    live = tmp_path / f".{path.name}.{os.getppid()}.0badcafe{TEMP_SUFFIX}"  # a writer that is still running
    other = tmp_path / f".other.{ext}.{_dead_pid()}.feedface{TEMP_SUFFIX}"  # another path's temp
    mine = tmp_path / f".{path.name}.{os.getpid()}.12345678{TEMP_SUFFIX}"  # another thread of this process
    foreign = tmp_path / f".{path.name}.notapid.abc{TEMP_SUFFIX}"  # not our naming pattern
    for f in (dead, live, other, mine, foreign):
        f.write_bytes(b"x" * 100)
    WRITERS[ext](path)
    assert path.is_file()
    assert not dead.exists()
    assert live.exists() and other.exists() and mine.exists() and foreign.exists()


def test_exception_inside_the_block_leaves_the_old_file(tmp_path):
    path = tmp_path / "r.json"
    path.write_text("old")
    for text in (False, True):
        with pytest.raises(RuntimeError, match="boom"):
            with atomic_write(path, text=text) as fh:
                fh.write("new, half written" if text else b"new, half written")
                raise RuntimeError("boom")
        assert path.read_text() == "old"
        assert _temps(tmp_path) == []


@pytest.mark.parametrize("ext", sorted(WRITERS))
def test_failure_after_the_data_is_written_leaves_the_old_file(tmp_path, monkeypatch, ext):
    """Every writer: the whole new file was written to the temp file, then the rename fails (full disk, EIO):
    the previous file is untouched and the temp file removed."""
    path = tmp_path / f"m.{ext}"
    path.write_bytes(b"previous")

    def fail(src, dst):
        assert os.path.getsize(src) > 0  # the data was written before the rename
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="Input/output error"):
        WRITERS[ext](path)
    assert path.read_bytes() == b"previous"
    assert _temps(tmp_path) == []


@pytest.mark.parametrize("ext", sorted(WRITERS))
def test_missing_folder_error_names_the_users_path(tmp_path, ext):
    path = tmp_path / "no" / "such" / f"m.{ext}"
    with pytest.raises(FileNotFoundError) as err:
        WRITERS[ext](path)
    msg = str(err.value)
    assert str(path) in msg and TEMP_SUFFIX not in msg, msg
    assert not (tmp_path / "no").exists()


def test_missing_folder_is_also_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        write_atomic(tmp_path / "none" / "x.bin", b"")
    assert issubclass(MissingFolderError, FileNotFoundError)


def test_a_folder_as_destination_names_it(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(IsADirectoryError, match="it is a folder"):
        write_atomic(tmp_path / "d", b"x")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write read-only folders")
def test_unwritable_folder_error_names_the_users_path(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o500)
    try:
        with pytest.raises(PermissionError) as err:
            write_atomic(ro / "x.bin", b"x")
        assert str(ro / "x.bin") in str(err.value) and TEMP_SUFFIX not in str(err.value)
    finally:
        os.chmod(ro, 0o700)
