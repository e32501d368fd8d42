"""The article's six examples run end to end (as subprocesses, as a user runs them) and print their effect.

PYFLUX_EXAMPLE_FAST=1 shrinks their training (8,000 images) so the six stay quick in CI; the default run is
the one documented to take < 60 s each on 2 cores.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = ["01_weight_pruning.py", "02_distillation.py", "03_sparsification.py", "04_quantization.py",
           "05_onnx_conversion.py", "06_deployment.py"]

# what each example must print: the article's step and its measured effect
EXPECT = {
    "01_weight_pruning.py": [r"\|w\| > 0\.1 keeps [\d,]+ of [\d,]+ weights", r"sparse CSR", r"effect: [\d.]+% of layer 1"],
    "02_distillation.py": [r"article MSE vs softmax\(teacher\)", r"Hinton KD", r"labels only", r"fewer parameters"],
    "03_sparsification.py": [r"weight sparsity 50\.00%", r"2:4 check: max nonzeros per group of 4 inputs in layer 1 = [012]\b",
                             r"literal 0\.5 \.\* W zeroes nothing"],
    "04_quantization.py": [r"int8 per-channel", r"ORT p50 ms", r"effect: int8 stores the weights in 0\.2\d?x"],
    "05_onnx_conversion.py": [r"onnx\.checker passed", r"ORT vs NumPy max \|diff\|", r"256\s+[\d.]+\s+[\d,]+"],
    "06_deployment.py": [r"predict\(model, rand\(Float32, \d+\)\) -> \(10,\) logits",
                         r"loaded parameters identical to saved\s+True", r"agrees: True"],
}


def test_every_snippet_has_an_example():
    # 07_autocompress.py is not an article snippet (tests/test_search.py runs it)
    assert sorted(p.name for p in EXAMPLES.glob("0*.py") if p.name != "07_autocompress.py") == SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS)
def test_header_maps_the_article_and_its_corrections(script):
    text = (EXAMPLES / script).read_text(encoding="utf-8")
    header = text.split('"""')[1]
    assert "Article (Julia)" in header and "This example (Python)" in header
    assert "Correction" in header
    if script in ("01_weight_pruning.py", "03_sparsification.py"):
        assert "weight" in header and ".*" in header  # w -> weight, `.` -> `.*`
    if script == "04_quantization.py":
        assert "no ``quantize``" in header
    if script == "05_onnx_conversion.py":
        assert 'convert(model, "ONNX")' in header
    if script == "06_deployment.py":
        assert "rand(Float32, 784)" in header and "Flux.loadmodel!" in header


@pytest.mark.parametrize("script", SCRIPTS)
def test_example_runs_and_prints_its_effect(script, tmp_path):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    out = tmp_path / "out"
    env = {**os.environ, "PYFLUX_EXAMPLE_FAST": "1", "PYTHONWARNINGS": "ignore"}
    r = subprocess.run([sys.executable, str(EXAMPLES / script), "--out", str(out)], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    assert re.search(r"^data: (mnist|fashion-mnist|digits), ", r.stdout, re.M)
    assert re.search(r"test accuracy \d+\.\d+%", r.stdout)
    for pattern in EXPECT[script]:
        assert re.search(pattern, r.stdout), f"{script}: missing {pattern!r} in\n{r.stdout}"
    assert list(cwd.iterdir()) == []  # never litters the working directory


def test_examples_leave_no_temporary_folder_behind(tmp_path):
    """Without --out an example writes to a temporary folder it prints, and removes it when it ends."""
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {**os.environ, "PYFLUX_EXAMPLE_FAST": "1", "PYTHONWARNINGS": "ignore", "TMPDIR": str(tmpdir)}
    r = subprocess.run([sys.executable, str(EXAMPLES / "05_onnx_conversion.py")], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    m = re.search(r"^outputs: (\S+) \(temporary, removed when the script ends", r.stdout, re.M)
    assert m and m.group(1).startswith(str(tmpdir)), r.stdout[:500]
    assert not (tmpdir / os.path.basename(m.group(1))).exists()
    assert [p.name for p in tmpdir.iterdir() if p.name.startswith("pyflux-example-")] == []
