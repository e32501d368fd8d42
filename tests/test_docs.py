"""Every Python code block in README.md and docs/**/*.md runs, as written, as a test.

Blocks are found generically: any fenced block whose info string is ``python`` (or ``py``) in README.md or in a
Markdown file under docs/, so pages added later are covered without touching this file.

A block is self-contained by default: it runs alone in a fresh interpreter, in an empty temporary folder (files
it writes, such as ``model.jld2``, land there). A block that builds on the one before it in the same file says so
with this HTML comment (invisible on GitHub) on the line just above its opening fence::

    <!-- doc-test: continue -->

It then runs in the same interpreter, after the blocks it continues. Blocks may use the installed datasets
(``pfc.datasets.load``); where a dataset is missing the test skips, naming it. Nothing else is special: output
comments such as ``# 0.864`` are documentation, not assertions.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"^\s*<!--\s*doc-test:\s*(?P<verb>[\w-]+)\s*-->\s*$")
VERBS = ("continue",)
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\s]*)")
PYTHON = ("python", "py", "python3")


def _rel(path: Path) -> str:
    """``path`` relative to the repository when inside it (as test ids show it), else as given."""
    try:
        return path.relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


@dataclass
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    code: str
    continues: bool


@dataclass
class Group:
    """A self-contained block and the blocks that continue it: one interpreter run."""

    blocks: list[Block] = field(default_factory=list)

    @property
    def id(self) -> str:
        first = self.blocks[0]
        lines = "+".join(str(b.line) for b in self.blocks)
        return f"{_rel(first.path)}:{lines}"

    def script(self) -> str:
        parts = []
        for b in self.blocks:
            parts.append(f"# --- {_rel(b.path)}, block at line {b.line}\n{b.code}")
        return "\n".join(parts)


def markdown_files() -> list[Path]:
    files = [ROOT / "README.md"] if (ROOT / "README.md").is_file() else []
    return files + sorted((ROOT / "docs").rglob("*.md"))


def extract_blocks(path: Path, text: str | None = None) -> list[Block]:
    """The Python blocks of one Markdown file, with their continue markers. Raises ValueError for an unknown
    marker, a marker not followed by a Python block, or an unclosed fence."""
    lines = (path.read_text(encoding="utf-8") if text is None else text).splitlines()
    blocks: list[Block] = []
    pending: tuple[str, int] | None = None  # marker verb waiting for its block
    i = 0
    while i < len(lines):
        m = MARKER.match(lines[i])
        if m:
            if m.group("verb") not in VERBS:
                raise ValueError(f"{path}:{i + 1}: unknown doc-test marker {m.group('verb')!r}; known: {VERBS}")
            pending = (m.group("verb"), i + 1)
            i += 1
            continue
        f = FENCE.match(lines[i])
        if not f:
            if lines[i].strip() and pending:
                raise ValueError(f"{path}:{pending[1]}: a doc-test marker must be right above a code fence")
            i += 1
            continue
        fence, indent, info = f.group("fence"), len(f.group("indent")), f.group("info").lower()
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and not re.match(rf"^\s*{re.escape(fence[0]) * len(fence)}{re.escape(fence[0])}*\s*$",
                                              lines[i]):
            body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i])
            i += 1
        if i >= len(lines):
            raise ValueError(f"{path}:{start + 1}: unclosed code fence")
        i += 1
        if info in PYTHON:
            cont = pending is not None and pending[0] == "continue"
            if cont and not blocks:
                raise ValueError(f"{path}:{start + 1}: the first Python block cannot continue a previous one")
            blocks.append(Block(path, start + 1, "\n".join(body) + "\n", cont))
        elif pending:
            raise ValueError(f"{path}:{pending[1]}: a doc-test marker above a non-Python block ({info or 'plain'})")
        pending = None
    return blocks


def groups(blocks: list[Block]) -> list[Group]:
    out: list[Group] = []
    for b in blocks:
        if b.continues:
            out[-1].blocks.append(b)
        else:
            out.append(Group([b]))
    return out


def all_groups() -> list[Group]:
    return [g for path in markdown_files() for g in groups(extract_blocks(path))]


def run_script(script: str, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["MPLBACKEND"] = "Agg"
    env.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
    return subprocess.run([sys.executable, "-c", script], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


MISSING_DATA = re.compile(r"FileNotFoundError: .*(dataset|fashion-mnist|mnist|digits)", re.I)


@pytest.mark.parametrize("group", all_groups(), ids=lambda g: g.id)
def test_doc_block_runs(group, tmp_path):
    r = run_script(group.script(), tmp_path)
    if r.returncode != 0 and MISSING_DATA.search(r.stderr):
        pytest.skip(f"{group.id}: a dataset is not installed: {r.stderr.strip().splitlines()[-1]}")
    assert r.returncode == 0, (f"{group.id} failed (exit {r.returncode}):\n--- script\n{group.script()}\n"
                               f"--- stdout (tail)\n{r.stdout[-2000:]}\n--- stderr (tail)\n{r.stderr[-4000:]}")


# ------------------------------------------------------------------------------ the harness itself


def test_readme_and_every_docs_page_are_scanned():
    files = {p.relative_to(ROOT).as_posix() for p in markdown_files()}
    assert "README.md" in files
    assert {p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md")} <= files
    ids = [g.id for g in all_groups()]
    assert any(i.startswith("README.md:") for i in ids)
    assert any(i.startswith("docs/") for i in ids)


def test_markers_group_blocks(tmp_path):
    md = tmp_path / "page.md"
    text = ("intro\n\n```python\nx = 1\n```\n\ntext\n\n<!-- doc-test: continue -->\n```python\ny = x + 1\n```\n\n"
            "```bash\necho not python\n```\n\n```py\nz = 3\n```\n")
    blocks = extract_blocks(md, text)
    assert [(b.line, b.continues) for b in blocks] == [(3, False), (10, True), (18, False)]
    gs = groups(blocks)
    assert [len(g.blocks) for g in gs] == [2, 1]
    assert gs[0].script().count("block at line") == 2


@pytest.mark.parametrize("text, message", ids=["unknown", "first-continues", "not-above-fence", "non-python",
                                               "unclosed"], argvalues=[
    ("<!-- doc-test: skip -->\n```python\nx\n```\n", "unknown doc-test marker 'skip'"),
    ("<!-- doc-test: continue -->\n```python\nx\n```\n", "first Python block cannot continue"),
    ("```python\nx\n```\n<!-- doc-test: continue -->\n\nsome text\n```python\ny\n```\n", "right above a code fence"),
    ("```python\nx\n```\n<!-- doc-test: continue -->\n```bash\nls\n```\n", "above a non-Python block"),
    ("```python\nx = 1\n", "unclosed code fence"),
])
def test_bad_markers_are_errors(tmp_path, text, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        extract_blocks(tmp_path / "bad.md", text)


def test_a_failing_block_fails_and_continuation_shares_state(tmp_path):
    ok = run_script("x = 41\n# --- next block\nassert x + 1 == 42\n", tmp_path)
    assert ok.returncode == 0
    bad = run_script("import pyflux_compress as pfc\npfc.parse('Chain(Dense(2 => 2)')\n", tmp_path)
    assert bad.returncode != 0 and "FluxSyntaxError" in bad.stderr
    alone = run_script("print(x)\n", tmp_path)  # a self-contained block does not see other blocks' names
    assert alone.returncode != 0 and "NameError" in alone.stderr
