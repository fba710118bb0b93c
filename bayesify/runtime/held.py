"""Priors and constraints on parameters of the modules a model holds, applied once it is built.

The shape of ``self.fc.weight``, or which layers a factory put in ``self.layers``, is known only
once the model is constructed, so the rewriter ends ``__init__`` with the spec entries that may
select something in the class, then :func:`pyro_module`::

    class Model(PyroModule):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(5, 2)
            self.layers = make_layers()
            set_prior(self, "Model.fc.weight", "Normal", 0, 1)
            set_prior(self, "nn.Conv*.weight", "Normal", 0, 0.1)
            set_constraint(self, "Model.layers.*.bias", constraints.positive)
            pyro_module(self)

``set_prior`` and ``set_constraint`` only note the entry. The entries are applied when the
outermost rewritten model is built: a model built inside another's ``__init__`` (a block of a
network) waits for it, so every parameter is decided once, by the first entry of the spec that
selects it, whichever class wrote it down. An entry that selects nothing in this model (a head
that is ``nn.Identity()`` under some flag) leaves it as it is: whether an entry can select
anything at all is checked when the code is rewritten.
"""

import heapq
import sys
import threading
import warnings
from typing import Dict, Iterator, List, Optional, Tuple, Union

import torch
from pyro.nn import PyroModule, PyroParam, PyroSample
from pyro.nn.module import _Context, to_pyro_module_
from torch.distributions.constraints import Constraint

from bayesify.runtime.metaclass import pyro_module_class
from bayesify.runtime.prior import Prior
from bayesify.selectors import ANY, CLASS, Selector, match_path, parse

_UNCONSTRAINED = "_unconstrained"
#: Instance attribute holding the entries a rewritten class noted, until they are applied.
_NOTED = "_bayesify_entries"
#: Instance attribute of a built model: its entries are applied, later ones apply at once.
_BUILT = "_bayesify_built"
#: Instance attribute of a module: the entry that decided each of its parameters, by name
#: (kept where the parameter is, so that a network the model holds reports its own).
DECIDED = "_bayesify_decided"
#: Instance attribute of a built model: for an entry that decided nothing, a parameter it
#: selects that an earlier entry decided (``plan --build`` tells it from one that selects nothing).
SHADOWED = "_bayesify_shadowed"
#: Instance attribute of a layer that saves its parameters itself: its samples are kept out.
_STATE_DICT_HOOKED = "_bayesify_state_dict_hooked"
#: How to make a complex parameter (a Fourier layer's weights) random.
COMPLEX_ADVICE = (
    "Pyro's distributions draw real values; hold it as a real tensor of its real and imaginary "
    "parts, nn.Parameter(torch.view_as_real(weight)), read as torch.view_as_complex(self.weight) "
    "(its checkpoint's value converted the same way), or leave it out of the spec"
)
_waiting = threading.local()

Action = Union[Tuple[str, tuple, dict], Constraint]
Slot = Tuple[Tuple[str, ...], torch.nn.Module, str, torch.nn.Parameter]


def set_prior(
    module: torch.nn.Module,
    selector: str,
    family: str,
    *args: Union[float, str],
    **kwargs: Union[float, str, bool],
) -> None:
    """
    Notes that the parameters of ``module`` that ``selector`` selects become
    :class:`~pyro.nn.module.PyroSample` attributes with ``Prior(owner, family,
    *args, shape=parameter.shape, **kwargs)``, once the model is built (see
    :func:`pyro_module`).

    :param str selector: a spec selector: ``Class.attr[.attr…]``, whose path is
        matched below ``module``; ``nn.Linear.weight`` (a layer type), matched
        below every such layer of the model; or ``**.fc.weight``. Segments are
        fnmatch globs and ``**`` matches any number of them.
    """
    _note(module, selector, (family, args, kwargs))


def set_constraint(module: torch.nn.Module, selector: str, constraint: Constraint) -> None:
    """
    Notes that the parameters ``selector`` selects become
    :class:`~pyro.nn.module.PyroParam` attributes with ``constraint``, starting
    from their value (which must lie in the constraint's support) when the model
    is built. See :func:`set_prior` for ``selector``.
    """
    _note(module, selector, constraint)


def _note(module: torch.nn.Module, selector: str, action: Action) -> None:
    # One group a class: a subclass's __init__ notes its entries after its base's, and
    # only within a group is their order the spec's.
    module.__dict__.setdefault(_NOTED, [[]])[-1].append((parse(selector), action))
    if module.__dict__.get(_BUILT):  # noted after pyro_module(self), as older rewrites did
        _apply(module)


def pyro_module(module: torch.nn.Module) -> torch.nn.Module:
    """
    Makes every module inside ``module``, and ``module`` itself, a
    :class:`~pyro.nn.module.PyroModule`, in place, and returns it; the model's
    noted spec entries (:func:`set_prior`, :func:`set_constraint`) are applied
    once the outermost model being built gets here.

    Rewritten classes end ``__init__`` with ``pyro_module(self)``, so that what
    they hold is Pyro whatever built it: a layer, a container filled by
    ``append``, a conditional expression, a module passed in, another
    library's. Its parameters are then Pyro parameters named by their module path
    (``layers.0.weight``), and none of its modules is a second Pyro root. A module
    that pickles by a ``__reduce__`` of its own (torch.fx's ``GraphModule``) and holds
    no parameter keeps its class. Empty
    slots (``nn.ModuleList([layer, None])``) stay empty. A value that is not an
    :class:`torch.nn.Module` is returned as it is.

    A model built inside the ``__init__`` of another rewritten class is a part of
    that model: it waits for it, and may be run meanwhile (to size a layer).
    """
    if not isinstance(module, torch.nn.Module):
        return module
    groups = module.__dict__.get(_NOTED)
    if groups and groups[-1]:
        groups.append([])  # the next class's entries
    _convert(module)
    waiting = _waiting.__dict__.setdefault("modules", [])
    if _inside_a_rewritten_init(sys._getframe(1)):
        _defer(module)
        waiting.append(module)
        return module
    del _waiting.modules
    # Parts built inside a rewritten __init__ that the model does not hold (kept elsewhere,
    # or thrown away) are models of their own; outer ones were noted last. A part whose
    # modules the model took (``nn.Sequential(block.norm, block.conv)``, the block thrown
    # away) decides their parameters by its entries, but they keep the model's names.
    applied: set = set()
    for part in [module, *reversed(waiting)]:
        if id(part) not in applied:
            inner = {id(each) for each in part.modules()}
            _apply(part, adopt=not inner & applied)
            applied |= inner
    return module


def _convert(module: torch.nn.Module) -> None:
    for child in module.children():
        _convert(child)
    # A module that pickles by a __reduce__ of its own (torch.fx's GraphModule, which e3nn
    # holds in every layer) and holds nothing for Pyro keeps its class: Pyro's class would
    # replace that __reduce__ with its own, which pickles the class by reference, and
    # GraphModule's class is made anew for each instance.
    if not isinstance(module, PyroModule) and not _pickles_itself_and_holds_nothing_for_pyro(module):
        # Children first: the parent then re-registers them as the PyroModules they are. The
        # class is made first where Pyro's PyroModule[...] would be a metaclass conflict.
        pyro_module_class(type(module))
        orders = {table: list(getattr(module, table)) for table in _REGISTERED}
        to_pyro_module_(module, recurse=False)
        # Re-registering moves an entry after the empty ones (None), which are not re-set:
        # ModuleList([pre_norm, None, None]) would iterate as [None, None, pre_norm].
        for table, order in orders.items():
            _reorder(getattr(module, table), order)


def _pickles_itself_and_holds_nothing_for_pyro(module: torch.nn.Module) -> bool:
    pickles_itself = any(
        "__reduce__" in vars(cls) or "__reduce_ex__" in vars(cls)
        for cls in type(module).__mro__
        if cls is not object
    )
    return (
        pickles_itself
        and next(module.parameters(recurse=False), None) is None
        and not any(isinstance(child, PyroModule) for child in module.children())
    )


#: A module's tables of what it registers, by name, in the order it registered them.
_REGISTERED = ("_parameters", "_buffers", "_modules")


def _reorder(table: Dict[str, object], order: List[str]) -> None:
    if list(table) != order:
        entries = {name: table[name] for name in order if name in table}
        entries.update(table)
        table.clear()
        table.update(entries)


def _inside_a_rewritten_init(frame) -> bool:
    """Whether the ``__init__`` calling :func:`pyro_module` runs inside another ``__init__``
    that ends by calling it: a rewritten class's, which applies the spec to all it holds."""
    frame = frame.f_back
    while frame is not None:
        code = frame.f_code
        if code.co_name == "__init__" and "pyro_module" in code.co_names:
            return True
        frame = frame.f_back
    return False


class _UnderConstruction(_Context):
    """The context of a model that is a part of one still being built: running it there (to
    size a layer) is not the use that Pyro's check against a second root guards against, and
    the outermost model gives it its own context once it is built."""

    @property
    def used(self) -> bool:
        return bool(self.active)  # names its parameters while it runs, as Pyro does

    @used.setter
    def used(self, value: bool) -> None:
        pass


def _defer(module: PyroModule) -> None:
    _adopt(module, _UnderConstruction())


def _adopt(root: PyroModule, context: _Context) -> None:
    """Gives every PyroModule below ``root`` ``context`` and its name by its path from ``root``,
    top down, as :func:`~pyro.nn.module.to_pyro_module_` does for a model built plain: one Pyro
    root, however the modules were built, shared, converted or run while being built."""
    root._pyro_context = context
    _name_below(root, context)


def site_name(module: PyroModule, attribute: str) -> str:
    """The Pyro name of ``module``'s ``attribute``: its path from the outermost PyroModule
    (``q_net.fc.weight`` for a network that a policy holds as ``q_net``)."""
    return f"{module._pyro_name}.{attribute}" if module._pyro_name else attribute


def _name_below(parent: PyroModule, context: _Context) -> None:
    # In module order, each module last named where it is held last, as setattr names it.
    for name, child in parent._modules.items():
        if isinstance(child, PyroModule):
            child._pyro_name = site_name(parent, name)
            child._pyro_context = context
            _name_below(child, context)


def _apply(root: torch.nn.Module, adopt: bool = True) -> None:
    """Decides every parameter of ``root`` by the first noted entry that selects it, in spec
    order, keeps tied parameters tied, and (``adopt``) makes ``root`` the one Pyro root of
    them all."""
    modules = {_split(prefix): part for prefix, part in root.named_modules()}
    noted = [
        (prefix, group)
        for prefix, part in modules.items()
        if _NOTED in part.__dict__
        # A subclass's entries name the class the module is: they go before its bases'.
        for group in reversed(part.__dict__.pop(_NOTED))
        if group
    ]
    if noted:
        slots = list(_plain_slots(modules))
        winners: Dict[int, Tuple[Slot, Selector, Action]] = {}
        of_type: Dict[Tuple[type, str], bool] = {}  # a model holds many layers of few classes
        for selector, action in _in_spec_order(noted):
            owners = _owners(noted, selector)
            for slot in slots:
                if id(slot[3]) not in winners and any(
                    _selects(selector, path, owners, modules, of_type) for path in _names_of(slot[0])
                ):
                    winners[id(slot[3])] = (slot, selector, action)
        _note_shadowed(root, noted, slots, winners, modules, of_type)
        for _, owner, name, parameter in slots:
            winner = winners.get(id(parameter))
            if winner is None:
                continue
            (first_path, first_owner, first_name, _), selector, action = winner
            owner.__dict__.setdefault(DECIDED, {})[name] = selector.text
            if first_owner is owner and first_name == name:
                _replace(owner, name, parameter, selector, action)
            else:  # the same parameter held twice (tied weights): both places read one value
                setattr(owner, name, PyroSample(Tied(first_owner, first_name)))
            if type(owner)._save_to_state_dict is not torch.nn.Module._save_to_state_dict:
                _keep_samples_out_of_state_dict(owner)
        _warn_of_optimizers_over(modules, set(winners))
    if adopt:
        _adopt(root, _Context())
    root.__dict__[_BUILT] = True


def _warn_of_optimizers_over(modules: Dict[Tuple[str, ...], torch.nn.Module], replaced: set) -> None:
    """Warns of an optimizer that a module built in its ``__init__`` (stable-baselines3's
    policies do) over parameters that the spec has since replaced: it would train tensors the
    model no longer holds, while every call draws the random ones from their prior."""
    for path, module in modules.items():
        for attribute, value in vars(module).items():
            if not isinstance(value, torch.optim.Optimizer):
                continue
            stale = sum(id(p) in replaced for group in value.param_groups for p in group["params"])
            if stale:
                where = ".".join((*path, attribute))
                warnings.warn(
                    f"the optimizer the model holds as {where!r} was built over {stale} parameters that "
                    "the spec has since made random or constrained: it trains tensors the model no longer "
                    "holds. Train with fit, or build the optimizer after the model, over the model's and "
                    "the guide's parameters (runtime.md, 'In a loop of your own')",
                    stacklevel=4,
                )


Noted = List[Tuple[Tuple[str, ...], list]]


def _owners(noted: Noted, selector: Selector) -> List[Tuple[str, ...]]:
    return [prefix for prefix, entries in noted if any(s.text == selector.text for s, _ in entries)]


def _note_shadowed(
    root: torch.nn.Module,
    noted: Noted,
    slots: List[Slot],
    winners: Dict[int, Tuple[Slot, Selector, Action]],
    modules: Dict[Tuple[str, ...], torch.nn.Module],
    of_type: Dict[Tuple[type, str], bool],
) -> None:
    """Notes, for each entry that decided nothing, a parameter it selects and the entry that
    decided it first. Only those entries are matched again: the rest cost no second pass."""
    won = {selector.text for _, selector, _ in winners.values()}
    shadowed = root.__dict__.setdefault(SHADOWED, {})
    for selector, _ in _in_spec_order(noted):
        if selector.text in won or selector.text in shadowed:
            continue
        owners = _owners(noted, selector)
        for slot in slots:
            if id(slot[3]) in winners and any(
                _selects(selector, path, owners, modules, of_type) for path in _names_of(slot[0])
            ):
                shadowed[selector.text] = (".".join(slot[0]), winners[id(slot[3])][1].text)
                break


def _split(prefix: str) -> Tuple[str, ...]:
    return tuple(prefix.split(".")) if prefix else ()


def _plain_slots(modules: Dict[Tuple[str, ...], torch.nn.Module]) -> Iterator[Slot]:
    """Every parameter not yet random or constrained, with its path, in module order."""
    for prefix, owner in modules.items():
        constrained = getattr(owner, "_pyro_params", {})
        for name, value in owner._parameters.items():
            if value is not None and name.removesuffix(_UNCONSTRAINED) not in constrained:
                yield (*prefix, name), owner, name, value


def _names_of(path: Tuple[str, ...]) -> Tuple[Tuple[str, ...], ...]:
    """The paths a parameter is selected by: its own, and for the tensor behind a torch
    parametrization (``torch.nn.utils.parametrize``: weight norm, an orthogonal or a normalized
    weight, ``fc.parametrizations.weight.original``) the parameter the layer computes from it
    (``fc.weight``), which the layer no longer holds."""
    if len(path) >= 3 and path[-3] == "parametrizations" and path[-1] == "original":
        return path, (*path[:-3], path[-2])
    return (path,)


def _in_spec_order(noted: Noted) -> List[Tuple[Selector, Action]]:
    """The entries every class noted, in the order of the spec they come from: each class
    notes its entries in spec order, so the order of all is the one that agrees with each
    class's; an outer class's entries go first where no class tells."""
    actions: Dict[str, Tuple[Selector, Action]] = {}
    after: Dict[str, set] = {}
    before_count: Dict[str, int] = {}
    for _, entries in noted:
        texts = [selector.text for selector, _ in entries]
        for selector, action in entries:
            actions.setdefault(selector.text, (selector, action))
            before_count.setdefault(selector.text, 0)
        for earlier, later in zip(texts, texts[1:]):
            if later not in after.setdefault(earlier, set()):
                after[earlier].add(later)
                before_count[later] += 1
    rank = {text: position for position, text in enumerate(actions)}
    ready = [(rank[text], text) for text, count in before_count.items() if count == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        _, text = heapq.heappop(ready)
        order.append(text)
        for later in after.get(text, ()):
            before_count[later] -= 1
            if before_count[later] == 0:
                heapq.heappush(ready, (rank[later], later))
    order += [text for text in actions if text not in order]  # classes rewritten from two specs
    return [actions[text] for text in order]


def _selects(
    selector: Selector,
    path: Tuple[str, ...],
    owners: List[Tuple[str, ...]],
    modules: Dict[Tuple[str, ...], torch.nn.Module],
    of_type: Dict[Tuple[type, str], bool],
) -> bool:
    if selector.kind == ANY:
        return selector.matches_path(path)
    if selector.kind == CLASS:
        return any(
            path[: len(owner)] == owner and match_path(selector.path, path[len(owner) :]) for owner in owners
        )
    return any(
        _is_of_type(modules.get(path[:depth]), selector, of_type) and match_path(selector.path, path[depth:])
        for depth in range(len(path))
    )


def _is_of_type(
    module: Optional[torch.nn.Module], selector: Selector, of_type: Dict[Tuple[type, str], bool]
) -> bool:
    if module is None:
        return False
    key = (type(module), selector.text)
    if key not in of_type:
        # A class of the user's derives from torch.nn.Module, which is no layer type.
        of_type[key] = selector.matches_type(
            (cls.__module__, cls.__name__) for cls in type(module).__mro__ if cls is not torch.nn.Module
        )
    return of_type[key]


def _replace(
    owner: torch.nn.Module, name: str, parameter: torch.nn.Parameter, selector: Selector, action: Action
) -> None:
    if isinstance(action, tuple):
        if parameter.is_complex():
            raise ValueError(
                f"the spec entry {selector.text!r} gives {type(owner).__name__}.{name} a prior, but it is "
                f"complex ({parameter.dtype}): {COMPLEX_ADVICE}"
            )
        family, args, kwargs = action
        setattr(owner, name, PyroSample(Prior(owner, family, *args, shape=parameter.shape, **kwargs)))
        return
    value = parameter.detach().clone()
    if value.device.type != "meta" and not bool(action.check(value).all()):
        # Pyro would start from the inverse transform of a value outside the support: NaN.
        raise ValueError(
            f"the spec entry {selector.text!r} constrains {type(owner).__name__}.{name} to "
            f"{action}, but its initial value is not inside it; initialise it inside "
            "the support, or choose another constraint"
        )
    setattr(owner, name, PyroParam(value, constraint=action))


def _keep_samples_out_of_state_dict(module: torch.nn.Module) -> None:
    """A layer that saves its parameters itself by reading its attributes (PyTorch Geometric's
    ``Linear``), not its parameter table, would put a draw from the prior of each random one in
    ``state_dict()``, which ``load_state_dict`` then refuses as unexpected: they are left out,
    as torch's own layers leave them."""
    if not module.__dict__.get(_STATE_DICT_HOOKED):
        module.register_state_dict_post_hook(_without_samples)
        module.__dict__[_STATE_DICT_HOOKED] = True


def _without_samples(module: torch.nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    for name in module.__dict__.get("_pyro_samples", {}):
        state_dict.pop(prefix + name, None)


class Tied:
    """
    The prior of a parameter that a model holds in two places (tied weights:
    ``self.decoder.bias = self.bias``, an output layer sharing the embedding's
    weight): the value of the other place, so both read one sample. Pyro
    records it as a deterministic site.
    """

    def __init__(self, module: torch.nn.Module, name: str) -> None:
        self.module = module
        self.name = name

    def __call__(self, module: torch.nn.Module) -> torch.Tensor:
        return getattr(self.module, self.name)

    def __repr__(self) -> str:
        return f"Tied({type(self.module).__name__}.{self.name})"
