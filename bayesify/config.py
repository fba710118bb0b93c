"""``[tool.bayesify]`` in ``pyproject.toml``: the CLI's defaults, found the way black finds them.

::

    [tool.bayesify]
    priors = "model/priors.yaml"    # relative to this pyproject.toml
    extend-exclude = "^/generated/"
    allow-unmatched = false
    context = ["../shared/layers"]

    [tool.bayesify.rewrite]         # keys for one subcommand only
    format = "github"

The file is the ``pyproject.toml`` at the project root of the PATHS (see
:func:`bayesify.discover.find_project_root`), or the one ``--config`` names. Keys are the
long option names, ``-`` or ``_`` alike; values have the option's type. Paths (``priors``,
``out``, ``context``) are relative to the config file, so the same config works from any
folder. A ``[tool.bayesify.<command>]`` table holds keys for one subcommand, which win over
the shared ones for it; a shared key that one subcommand's option refuses (``format =
"github"``, which ``plan`` has not) is left to the subcommands that take it. Without a ``priors`` key the spec is as :func:`spec_location` says: the nearest ``priors.yaml``
on the way from the paths up to the project root, else the one beside the config file, or
at the root when there is none.
"""

from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on older Pythons only
    import tomli as tomllib

from .discover import common_folder, find_project_root

DEFAULT_SPEC = "priors.yaml"
#: Options whose values are paths, resolved against the config file's folder.
PATH_KEYS = ("priors", "out")
PATH_LIST_KEYS = ("context",)


class ConfigError(Exception):
    pass


def _real_paths(paths: Sequence[str]) -> list[str]:
    return [path for path in paths if path != "-"] or ["."]


def find_config(paths: Sequence[str]) -> Optional[Path]:
    """``pyproject.toml`` at the project root of ``paths``, if there is one."""
    candidate = find_project_root(_real_paths(paths)) / "pyproject.toml"
    return candidate if candidate.is_file() else None


def read_config(path: Path) -> dict[str, Any]:
    """The ``[tool.bayesify]`` table, keys in ``snake_case``, paths made absolute."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"{path}: cannot read [tool.bayesify]: {error}") from None
    table = data.get("tool", {}).get("bayesify", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [tool.bayesify] must be a table")
    return _normalised(table, path)


def _normalised(table: dict[str, Any], path: Path) -> dict[str, Any]:
    """Keys in ``snake_case`` and path values absolute, in ``table`` and its sub-tables."""
    folder = path.resolve().parent
    defaults = {
        key.replace("-", "_"): _normalised(value, path) if isinstance(value, dict) else value
        for key, value in table.items()
    }
    for key in PATH_KEYS:
        if key in defaults:
            defaults[key] = str(folder / _path_value(path, key, defaults[key]))
    for key in PATH_LIST_KEYS:
        if key in defaults:
            values = defaults[key]
            values = [values] if isinstance(values, str) else values
            if not isinstance(values, list):
                raise ConfigError(f"{path}: [tool.bayesify] {key} must be a path or a list of paths")
            defaults[key] = [str(folder / _path_value(path, key, value)) for value in values]
    return defaults


def _path_value(config: Path, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{config}: [tool.bayesify] {key} must be a path (a string), not {value!r}")
    return value


def spec_location(paths: Sequence[str], config: Optional[Path]) -> Path:
    """Where the spec is when no option names it: the nearest ``priors.yaml`` on the way from
    the folder that holds the paths up to the project root (a subproject's spec in a
    repository); but beside a config file off that way (``--config ci/pyproject.toml``), the
    one there; else ``priors.yaml`` beside the config file, or at the root without one."""
    paths = _real_paths(paths)
    root = find_project_root(paths)
    common = common_folder(paths)
    way = [common, *itertools.takewhile(lambda folder: folder != root.parent, common.parents)]
    beside_config = config.resolve().parent / DEFAULT_SPEC if config else None
    if beside_config is not None and beside_config.parent not in way and beside_config.is_file():
        return beside_config
    nearest = next((folder / DEFAULT_SPEC for folder in way if (folder / DEFAULT_SPEC).is_file()), None)
    return nearest or beside_config or root / DEFAULT_SPEC


def default_priors(paths: Sequence[str], config: Optional[Path]) -> Optional[str]:
    """The spec at :func:`spec_location`, if there is one."""
    candidate = spec_location(paths, config)
    return str(candidate) if candidate.is_file() else None


def shown(path: str) -> str:
    """``path`` as messages show it: relative to the current folder, unless the absolute
    path is shorter (a folder far from here)."""
    absolute = os.path.abspath(path)
    try:
        relative = os.path.relpath(absolute)
    except ValueError:  # another drive
        return absolute
    return relative if len(relative) <= len(absolute) else absolute
