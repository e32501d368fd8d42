"""The Julia package is checked statically (no Julia runtime here): `.ci/lint-julia.sh` runs fatou with the
rules of julia/fatou.toml. These tests prove the check passes on julia/ AND that it can fail."""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JULIA = os.path.join(ROOT, "julia")
SCRIPT = os.path.join(ROOT, ".ci", "lint-julia.sh")

needs_fatou = pytest.mark.skipif(shutil.which("fatou") is None, reason="fatou not installed (pip install fatou)")


def lint(path: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", SCRIPT, path], capture_output=True, text=True, timeout=120)


@pytest.fixture
def julia_copy(tmp_path):
    dst = tmp_path / "julia"
    shutil.copytree(JULIA, dst)
    return dst


def test_rules_are_enabled():
    text = open(os.path.join(JULIA, "fatou.toml"), encoding="utf-8").read()
    assert re.search(r'select\s*=\s*\[[^\]]*"undefined-name"', text)
    assert re.search(r'select\s*=\s*\[[^\]]*"call-arity"', text)


@needs_fatou
def test_julia_package_is_clean():
    out = lint(JULIA)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "fatou clean" in out.stdout


@needs_fatou
def test_undefined_name_in_a_source_file_fails(julia_copy):
    (julia_copy / "src" / "broken.jl").write_text("broken_helper(x) = undefined_thing(x) + 1\n")
    src = julia_copy / "src" / "FluxCompress.jl"
    src.write_text(src.read_text().replace('include("kernels.jl")', 'include("kernels.jl")\ninclude("broken.jl")'))
    out = lint(str(julia_copy))
    assert out.returncode == 1
    assert "undefined_thing" in out.stderr and "undefined-name" in out.stderr


@needs_fatou
def test_wrong_arity_fails(julia_copy):
    prune = julia_copy / "src" / "prune.jl"
    prune.write_text(prune.read_text() + "\nbad_call() = n_to_prune(0.5)\n")
    out = lint(str(julia_copy))
    assert out.returncode == 1 and "call-arity" in out.stderr and "n_to_prune" in out.stderr


@needs_fatou
def test_typo_in_a_test_body_fails(julia_copy):
    """Test bodies are plain functions (not macro arguments), so the linter sees them."""
    tests = julia_copy / "test" / "runtests.jl"
    text = tests.read_text()
    assert "check(first.(walk(m))" in text
    tests.write_text(text.replace("check(first.(walk(m))", "check(first.(wallk(m))", 1))
    out = lint(str(julia_copy))
    assert out.returncode == 1 and "wallk" in out.stderr


@needs_fatou
def test_bare_using_is_not_allowed_to_slip_in(julia_copy):
    """A bare `using Flux` hides undefined names from fatou; our sources must use explicit imports."""
    for path in glob.glob(os.path.join(JULIA, "**", "*.jl"), recursive=True):
        for line in open(path, encoding="utf-8"):
            stripped = line.strip()
            if stripped.startswith("using "):
                assert ":" in stripped, f"{os.path.relpath(path, ROOT)}: bare `{stripped}` (use `using X: a, b`)"


def test_every_export_is_defined():
    """fatou does not check `export` lists; a name exported but never defined would only fail in Julia."""
    src = "".join(open(f, encoding="utf-8").read() for f in glob.glob(os.path.join(JULIA, "src", "*.jl")))
    module = open(os.path.join(JULIA, "src", "FluxCompress.jl"), encoding="utf-8").read()
    names = []
    for block in re.findall(r"^export (.*?)(?=\n(?!\s))", module, re.S | re.M):
        names += [n.strip() for n in block.replace("\n", " ").split(",") if n.strip()]
    assert len(names) > 30
    for n in names:
        e = re.escape(n)
        defined = re.search(rf"(^|\n)\s*(function\s+{e}\b|{e}\(.*?\)\s*=|(mutable\s+)?struct\s+{e}\b|const\s+{e}\b)", src)
        assert defined, f"FluxCompress exports {n} but src/ never defines it"


def test_project_toml():
    text = open(os.path.join(JULIA, "Project.toml"), encoding="utf-8").read()
    uuids = {"Flux": "587475ba-b771-5e3f-ad9e-33799f191a9c", "JLD2": "033835bb-8acc-5ee8-8aae-3f567f8a3819",
             "Optimisers": "3bd65402-5787-11e9-1adc-39752487f4e2",
             "Statistics": "10745b16-79ce-11e8-11f9-7d13ad32a3b2",
             "LinearAlgebra": "37e2e46d-f89d-539d-b4ee-838fcccc9c8e",
             "Random": "9a3f8284-a2c9-5f02-9a11-845980a1fd5c"}
    assert 'name = "FluxCompress"' in text
    for name, uuid in uuids.items():
        assert f'{name} = "{uuid}"' in text
    assert 'Flux = "0.14, 0.15, 0.16"' in text and 'JLD2 = "0.4, 0.5, 0.6"' in text and 'julia = "1.10"' in text
