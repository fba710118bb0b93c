"""``[tool.bayesify]`` in ``pyproject.toml``: the CLI's defaults, found the way black finds them.

::

    [tool.bayesify]
    priors = "priors.yaml"        # relative to this pyproject.toml
    extend-exclude = "^/generated/"
    allow-unmatched = false

Keys are the long option names (``-`` or ``_`` alike). The priors path, and the default
``priors.yaml`` beside the project root, are resolved against the config file's folder.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional, Sequence

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on older Pythons only
    import tomli as tomllib

from .discover import find_project_root


class ConfigError(Exception):
    pass


def find_config(paths: Sequence[str]) -> Optional[Path]:
    root = find_project_root([p for p in paths if p != "-"] or ["."])
    candidate = root / "pyproject.toml"
    return candidate if candidate.is_file() else None


def read_config(path: Path) -> dict[str, Any]:
    """The ``[tool.bayesify]`` table as click defaults, paths made absolute."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"{path}: cannot read [tool.bayesify]: {error}") from None
    table = data.get("tool", {}).get("bayesify", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [tool.bayesify] must be a table")
    defaults = {key.replace("-", "_"): value for key, value in table.items()}
    for key in ("priors", "out"):
        if key in defaults:
            defaults[key] = str((path.parent / defaults[key]).resolve())
    return defaults


def default_priors(paths: Sequence[str]) -> Optional[str]:
    """``priors.yaml`` at the project root, when there is one and no option names a spec."""
    root = find_project_root([p for p in paths if p != "-"] or ["."])
    candidate = root / "priors.yaml"
    return str(candidate) if candidate.is_file() else None
