"""The options of a command, as one object (as black's ``Mode``): what the command line and
``[tool.bayesify]`` asked for, handed around whole instead of as a dozen parameters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .diagnostics import Selection

#: The codes ``--strict`` makes errors: every lint (the tutorial's pitfalls).
STRICT_CODES = ("BAY1",)


@dataclass(frozen=True)
class Options:
    paths: tuple[str, ...] = ()
    exclude: Optional[str] = None
    extend_exclude: Optional[str] = None
    force_exclude: Optional[str] = None
    context: tuple[str, ...] = ()
    jobs: Optional[int] = None
    no_cache: bool = False
    quiet: bool = False
    verbose: bool = False
    error_on: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    # The spec (rewrite, plan).
    priors: Optional[str] = None
    allow_unmatched: bool = False
    output_format: str = "text"
    # rewrite
    check: bool = False
    diff: bool = False
    out: Optional[str] = None
    color: Optional[bool] = None
    strict: bool = False
    stdin_filename: Optional[str] = None
    # plan
    selected: bool = False
    class_name: Optional[str] = None
    build_call: Optional[str] = None
    # init
    output: Optional[str] = None
    force: bool = False

    @property
    def selection(self) -> Selection:
        """Which diagnostics are errors and which are not shown, by code."""
        return Selection(
            error_on=(*self.error_on, *(STRICT_CODES if self.strict else ())), ignore=self.ignore
        )

    @property
    def dry_run(self) -> bool:
        """Nothing is written: ``--check`` or ``--diff``."""
        return self.check or self.diff

    @property
    def located_paths(self) -> tuple[str, ...]:
        """The paths that find the config and the spec: standard input counts as the file
        ``--stdin-filename`` names."""
        return (self.stdin_filename,) if self.stdin_filename and self.paths == ("-",) else self.paths
