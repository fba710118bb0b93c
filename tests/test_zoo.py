"""The zoo benchmark's harness, on a few models of one package (``bench/zoo.py --quick``).

Deselected by default: it installs torch_geometric from PyPI into a virtual environment of
its own (``pytest -m realpackages -k zoo``). What it asserts is that the harness measures:
every model builds deterministically, and the run-time baseline passes on them, so a
failure of bayesify in the table is bayesify's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.realpackages

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "zoo.py"


def test_the_zoo_measures_both_sides_on_real_models(tmp_path: Path):
    results = tmp_path / "zoo.json"
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--quick",
            "--only",
            "torch_geometric",
            "--work",
            str(tmp_path / "work"),
            "--json",
            str(results),
        ],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if done.returncode == 2:
        pytest.skip(f"cannot install the zoo's packages: {done.stderr[-500:]}")
    report = json.loads(results.read_text())
    baseline = [r for r in report["results"] if r["mode"] == "baseline"]
    assert len(baseline) == 3
    assert all(r["deterministic"]["ok"] for r in baseline), done.stdout
    assert all(r[spec]["ok"] for r in baseline for spec in ("type", "head", "depth")), done.stdout
    assert {r["spec"] for r in report["rewrites"]} == {"type", "head", "depth"}
    assert "torch_geometric  type" in done.stdout
