"""The examples in the library's docstrings run, as the docs' examples do (tests/test_docs.py).

Only modules that need neither torch nor pyro: the runtime's examples are docs/runtime.md's.
"""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["bayesify.spec", "bayesify.names", "bayesify.discover", "bayesify.diagnostics"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str):
    outcome = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert outcome.failed == 0
    assert outcome.attempted > 0, f"{name} has no example that runs"
