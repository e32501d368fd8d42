#!/usr/bin/env bash
# The Julia project must ship inside the installed package: build the wheel, install it into a fresh venv
# outside the clone, and check that the FluxCompress "path" of the installed juliapkg.json resolves (as
# pyjuliapkg resolves it: relative to the json's folder, deps.py find_requirements) to a folder holding
# Project.toml and src/FluxCompress.jl inside that venv. No Julia is needed.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# nothing of the clone may be importable in the venv (a PYTHONPATH pointing at it, or the egg-info an in-tree
# build leaves, would make pip think the package is already installed); build from a copy of the sources so
# that a stale build/ folder in the clone cannot leak into the wheel
unset PYTHONPATH
mkdir "$work/src"
cp -r "$root/pyproject.toml" "$root/README.md" "$root/pyflux_compress" "$work/src/"
python -m pip wheel -q --no-deps -w "$work/dist" "$work/src"
python -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q --no-deps "$work"/dist/pyflux_compress-*.whl
cd "$work"
"$work/venv/bin/python" - "$root" <<'PY'
import importlib.util, json, os, sys
root = os.path.realpath(sys.argv[1])
spec = importlib.util.find_spec("pyflux_compress")          # locates the package without importing it
pkg = os.path.realpath(spec.submodule_search_locations[0])
assert not pkg.startswith(root + os.sep), f"pyflux_compress found in the clone ({pkg}), not in the venv"
fn = os.path.join(pkg, "juliapkg.json")
path = json.load(open(fn))["packages"]["FluxCompress"]["path"]
project = os.path.normpath(os.path.join(os.path.dirname(fn), path))
missing = [f for f in ("Project.toml", os.path.join("src", "FluxCompress.jl")) if not os.path.isfile(os.path.join(project, f))]
assert not missing, f"{fn}: FluxCompress path {path!r} -> {project}: missing {missing}"
jl = sorted(f for f in os.listdir(os.path.join(project, "src")) if f.endswith(".jl"))
want = sorted(f for f in os.listdir(os.path.join(root, "julia", "src")) if f.endswith(".jl"))
assert jl == want, f"the wheel's julia/src differs from the clone's: {sorted(set(want) ^ set(jl))}"
print(f"check-wheel: juliapkg.json FluxCompress path {path!r} -> {project} (Project.toml, {len(jl)} src/*.jl)")
PY
