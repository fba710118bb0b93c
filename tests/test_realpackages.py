"""bayesify on real packages from PyPI: the checks of ``bench/realpackages.py``, as tests.

Deselected by default (pyproject's ``-m 'not realpackages'``); run them with::

    pytest -m realpackages
    pytest -m realpackages -k siren     # one package

The first run downloads the pinned wheels (a few MB; ``transformers`` is 14 MB) into
``~/.cache/bayesify-realpackages``; without the registry the tests are skipped.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.realpackages

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "realpackages.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("bench_realpackages", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


realpackages = _load_script()


@pytest.fixture(scope="module", params=realpackages.PACKAGES, ids=lambda package: package.name)
def result(request):
    """Each package is downloaded, rewritten and probed once; the tests read the result."""
    try:
        return realpackages.check_package(request.param)
    except realpackages.DownloadError as error:
        pytest.skip(f"cannot download {request.param.name}: {error}")


def _problems(result, *checks: str) -> str:
    return "\n".join(
        f"{problem.check}: {problem.summary}\n{problem.detail}"
        for problem in result.problems
        if not checks or problem.check in checks
    )


def test_rewrite_succeeds_and_converts_classes(result):
    assert result.rewrote, _problems(result, "rewrite")
    assert result.classes > 0
    assert result.random > 0


def test_every_output_file_compiles(result):
    assert result.compiled, _problems(result, "compiled")


def test_a_second_run_changes_nothing(result):
    assert result.idempotent, _problems(result, "idempotent")


def test_models_import_trace_and_take_svi_steps(result):
    assert result.models, _problems(result)
    failing = [name for name, report in result.models.items() if not report["ok"]]
    assert not failing, _problems(result, *failing)
