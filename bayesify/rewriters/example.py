"""An example of what a rule (or a lint) does to one file, as the tests run it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Example:
    """One file ``before`` a rule runs, with a ``spec`` (the YAML after ``version: 1``), and
    what must come of it: the file ``after`` (None: unchanged) and the codes of the
    diagnostics reported, in order."""

    before: str
    after: Optional[str] = None
    spec: str = ""
    diagnostics: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        """``valid`` (rewritten), ``invalid`` (reported) or ``no-op`` (left as it is)."""
        if self.diagnostics:
            return "invalid"
        return "valid" if self.after is not None else "no-op"

    def again(self) -> Example:
        """This valid example's output run again, with the same spec: nothing may move."""
        assert self.after is not None
        return Example(before=self.after, spec=self.spec)
