"""What a spec selector says, and the one place where selectors are matched.

The CLI (which never imports torch) and the runtime (which does) both match selectors here, so
that the plan and the built model agree on what an entry selects. A selector has an owner and a
path below it::

    Net.fc.weight               CLASS  the ``fc.weight`` of every Net (a class of the run)
    pkg.models:Net.fc.weight    CLASS  pinned to the Net of module ``pkg.models``
    nn.Linear.weight            TYPE   the ``weight`` of every torch.nn.Linear (and subclass)
    nn.Conv*.weight             TYPE   ... of every torch.nn layer whose name matches ``Conv*``
    timm.layers.Conv2dSame.weight TYPE the ``weight`` of that class of another library
    **.fc.weight                ANY    every ``fc.weight``, at any depth of a built model

Every segment is an fnmatch glob, and ``**`` in the path matches any number of segments, zero
included (``ResNet.**.weight``).

>>> selector = parse("nn.Conv*.weight")
>>> selector.kind, selector.owner, selector.path
('type', 'torch.nn.Conv*', ('weight',))
>>> match_path(("**", "weight"), ("layer1", "0", "conv1", "weight"))
True
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Iterable, Optional

CLASS, TYPE, ANY = "class", "type", "any"
ANY_DEPTH = "**"
#: A segment, matched whole (``fullmatch``: ``$`` would let a trailing newline through, and a
#: selector is written into generated code).
_SEGMENT = re.compile(r"[A-Za-z0-9_*?\[\]!-]+")
#: A package or module name: the start of another library's dotted class path.
_PACKAGE = re.compile(r"[a-z_][a-z0-9_]*")
_TORCH_NN = "torch.nn"


class SelectorError(ValueError):
    """A selector that is not of a form bayesify reads; the message says which forms are."""


@dataclass(frozen=True)
class Selector:
    """``Class.attr[.attr…]``, ``nn.Layer.attr``, ``pkg.mod.Layer.attr`` or ``**.attr``."""

    text: str
    #: CLASS, TYPE or ANY.
    kind: str
    #: The class glob (CLASS), the dotted class path (TYPE: ``torch.nn.Linear``), or ``**``.
    owner: str
    #: ``pkg.module`` of ``pkg.module:Class.attr`` (CLASS only).
    module: Optional[str]
    #: The pattern below the owner; may hold ``**``.
    path: tuple[str, ...]

    @property
    def owner_name(self) -> str:
        """The class glob of the owner without its package: ``Linear`` for ``nn.Linear``."""
        return self.owner.rpartition(".")[2]

    def matches_class(self, module: str, class_name: str) -> bool:
        """Whether a class of the run (``class_name`` in ``module``) owns what this selects."""
        if self.kind == ANY:
            return True
        if self.kind == TYPE:
            return False
        if self.module is not None and not fnmatchcase(module, self.module):
            return False
        return fnmatchcase(class_name, self.owner)

    def matches_type(self, classes: Iterable[tuple[str, str]]) -> bool:
        """Whether a module whose class and bases are ``classes`` (``(module, name)`` pairs, the
        class's MRO) is of the layer type this selects. ``nn.Linear`` is any class named like
        ``Linear`` in ``torch.nn``; ``timm.layers.Conv2dSame`` any ``Conv2dSame`` in a module at
        or below ``timm.layers``, where a package's re-exports put it."""
        if self.kind != TYPE:
            return False
        package, _, name = self.owner.rpartition(".")
        return any(
            fnmatchcase(class_name, name) and (module == package or module.startswith(package + "."))
            for module, class_name in classes
        )

    def matches_path(self, path: tuple[str, ...]) -> bool:
        """Whether ``path`` below the owner is selected; an ANY selector's path may start at
        any depth (``**.fc.weight`` selects ``fc.weight`` and ``blocks.0.fc.weight``)."""
        return match_path((ANY_DEPTH, *self.path) if self.kind == ANY else self.path, path)

    @property
    def torch_layer_glob(self) -> Optional[str]:
        """``Conv*`` for ``nn.Conv*``: the torch.nn layers this selects, as a name glob."""
        return self.owner_name if self.kind == TYPE and self.owner.startswith(_TORCH_NN + ".") else None


def parse(text: str) -> Selector:
    """Read ``text`` as a selector; raise :class:`SelectorError` if it is not one."""
    module, colon, rest = text.rpartition(":")
    segments = tuple(rest.split("."))
    module_parts = module.split(".") if colon else []
    if len(segments) < 2 or not all(_SEGMENT.fullmatch(s) for s in (*segments, *module_parts)):
        raise SelectorError(
            f"selector {text!r} is not of the form Class.attr[.attr…] (or package.module:Class.attr, "
            "nn.Layer.attr, package.Layer.attr, **.attr); segments are names or fnmatch globs"
        )
    if not colon:
        if segments[0] == ANY_DEPTH:
            return Selector(text, ANY, ANY_DEPTH, None, segments[1:])
        owner_end = _type_owner_end(segments)
        if owner_end:
            owner = ".".join(segments[:owner_end])
            if segments[0] == "nn":
                owner = f"{_TORCH_NN}.{segments[1]}"
            return _checked(Selector(text, TYPE, owner, None, segments[owner_end:]))
    return _checked(Selector(text, CLASS, segments[0], module or None, segments[1:]))


def _type_owner_end(segments: tuple[str, ...]) -> int:
    """How many leading segments name a layer type, 0 if none: ``nn.Linear`` (2 of
    ``nn.Linear.weight``), ``timm.layers.Conv2dSame`` (3). A type path starts with a package
    name (lower case, no glob) and ends with the first segment that starts with a capital."""
    if segments[0] == "nn":
        return 2
    if segments[:2] == ("torch", "nn"):
        return 3
    if not _PACKAGE.fullmatch(segments[0]):
        return 0
    for end, segment in enumerate(segments[1:-1], start=2):
        if segment[:1].isupper():
            return end
        if not _PACKAGE.fullmatch(segment):
            return 0
    return 0


def _checked(selector: Selector) -> Selector:
    if not selector.path or all(part == ANY_DEPTH for part in selector.path):
        raise SelectorError(f"selector {selector.text!r} names no attribute after {ANY_DEPTH!r}")
    if ANY_DEPTH in selector.owner:
        raise SelectorError(f"selector {selector.text!r}: {ANY_DEPTH!r} stands alone as a segment")
    return selector


def match_path(pattern: tuple[str, ...], path: tuple[str, ...]) -> bool:
    """Whether ``path`` (``("layers", "0", "weight")``) matches ``pattern``: segment by segment
    with fnmatch, ``**`` matching any number of segments, zero included."""
    if not pattern:
        return not path
    head, rest = pattern[0], pattern[1:]
    if head == ANY_DEPTH:
        return any(match_path(rest, path[skip:]) for skip in range(len(path) + 1))
    return bool(path) and fnmatchcase(path[0], head) and match_path(rest, path[1:])
