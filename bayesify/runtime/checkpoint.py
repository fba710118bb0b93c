"""Loading checkpoints of the deterministic model into its rewritten, Bayesian twin."""

import inspect
import warnings
from typing import Dict, Iterator, Mapping

import torch
from pyro.nn import PyroModule
from torch.distributions import transform_to

from bayesify.runtime.held import COMPLEX_ADVICE, site_name
from bayesify.runtime.prior import PRIOR_ANCHOR, Prior


def load_deterministic(
    model: torch.nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    strict: bool = True,
) -> Dict[str, torch.Tensor]:
    """
    Loads a ``state_dict`` of the deterministic model into the rewritten model,
    and returns the values of the parameters that are now random.

    Keys are those of the deterministic model, so a checkpoint written before
    the rewrite loads unchanged:

    - a key of a :class:`~pyro.nn.module.PyroSample` attribute (its Pyro site
      name, e.g. ``linear.weight``) is not loaded into ``model`` but returned (and
      handed to its :class:`~bayesify.runtime.Prior`, for a prior centred on it);
    - a key of a :class:`~pyro.nn.module.PyroParam` attribute (``bias``) is
      loaded through its constraint into the unconstrained parameter Pyro
      trains (``bias_unconstrained``);
    - every other key loads as with :meth:`torch.nn.Module.load_state_dict`.

    The returned values can start a guide at the deterministic weights::

        model = BayesianRegressor()
        replaced = load_deterministic(model, torch.load("regressor.pt"))
        guide = AutoNormal(model, init_loc_fn=init_to_value(values=replaced))

    They are copies on the device and with the dtype of the module that holds
    each site, so training the guide never writes into ``state_dict``.

    :param torch.nn.Module model: the rewritten model.
    :param state_dict: a ``state_dict`` of the deterministic model.
    :param bool strict: whether the keys of ``state_dict`` must be exactly
        those of the deterministic model. If they are not, a
        :class:`RuntimeError` names the missing and unexpected keys and nothing
        is loaded.
    :returns: the checkpoint's values of the random sites, keyed by site name: the
        path from the outermost :class:`~pyro.nn.module.PyroModule`, which for a network
        that another holds (``policy.q_net``) begins with its attribute there
        (``q_net.fc.weight`` for the key ``fc.weight``).
    :rtype: dict
    """
    random_sites = {}  # site name -> module holding the PyroSample
    constrained = {}  # checkpoint key -> (model key, constraint)
    # Every path to a module: a module held twice (monai's DynUNet keeps its blocks again in
    # ``skip_layers``) is in a state_dict under each of them.
    for path, module in model.named_modules(remove_duplicate=False):
        prefix = f"{path}." if path else ""
        # PyroModule keeps its PyroSample priors and PyroParam constraints in these
        # dicts; reading them directly avoids triggering a sample or a param statement.
        for name in module.__dict__.get("_pyro_samples", {}):
            random_sites[prefix + name] = module
        for name, (constraint, _) in module.__dict__.get("_pyro_params", {}).items():
            constrained[prefix + name] = (f"{prefix}{name}_unconstrained", constraint)

    if not random_sites:
        # A rewritten class is a PyroModule: its spec selects nothing as it was built (TabNet's
        # head-only entry in a multi-task configuration, which has no such head).
        cause = (
            "its priors select nothing in it as built"
            if isinstance(model, PyroModule)
            else f"it was imported from {_source(type(model))}; import the class from the rewrite's output, "
            "or make its priors select something"
        )
        warnings.warn(
            f"load_deterministic: {type(model).__name__} has no random parameters, so there is nothing "
            f"to make Bayesian: {cause} (`bayesify plan --build` lists what each entry selects in the "
            "built model, and another library's layers that a torch layer type such as nn.Linear misses)",
            stacklevel=2,
        )
    unconstrained_keys = {model_key for model_key, _ in constrained.values()}
    expected = set(model.state_dict()) - unconstrained_keys
    expected |= set(constrained) | set(random_sites)
    missing = sorted(expected - set(state_dict))
    unexpected = sorted(set(state_dict) - expected)
    hint = _nested_hint(state_dict, expected) or _prefix_hint(missing, unexpected)
    if strict and (missing or unexpected):
        raise RuntimeError(
            f"the checkpoint does not match the deterministic {type(model).__name__}: missing keys "
            f"{missing}, unexpected keys {unexpected}{hint} (pass strict=False to load the rest)"
        )
    if state_dict and expected and not expected & set(state_dict):
        warnings.warn(
            f"load_deterministic: none of the checkpoint's keys is one of {type(model).__name__}'s, so "
            f"nothing was loaded{hint}",
            stacklevel=2,
        )

    _refuse_other_shapes(state_dict, random_sites)
    replaced = {}
    loadable = {}
    for key, value in state_dict.items():
        if key in random_sites:
            module, attribute = random_sites[key], key.rpartition(".")[2]
            if value.is_complex():  # a real prior's site would read it cast, its imaginary part lost
                raise ValueError(
                    f"the checkpoint's {key} is complex ({value.dtype}), and it is random: {COMPLEX_ADVICE}"
                )
            # A hand-written PyroSample has no anchor: its value stays as saved.
            anchor = module._buffers.get(PRIOR_ANCHOR)
            like = value if anchor is None else anchor
            # By the site's name: a network that another holds (SB3's policy.q_net) samples
            # "q_net.q_net.4.weight" for its key "q_net.4.weight".
            site = site_name(module, attribute)
            replaced[site] = value.detach().to(like.device, like.dtype, copy=True)
            prior = module._pyro_samples[attribute]
            if isinstance(prior, Prior):  # a prior centred on the deterministic value reads it
                prior.load_deterministic(replaced[site])
        elif key in constrained:
            model_key, constraint = constrained[key]
            loadable[model_key] = transform_to(constraint).inv(value.detach())
        else:
            loadable[key] = value
    model.load_state_dict(loadable, strict=strict)
    return replaced


def _refuse_other_shapes(
    state_dict: Mapping[str, torch.Tensor], random_sites: Dict[str, torch.nn.Module]
) -> None:
    """Raises, before anything is loaded, where a checkpoint's value of a random site has
    another shape than its prior samples, as ``load_state_dict`` does for a parameter: a
    guide started at it would broadcast against the prior's samples without a word."""
    mismatched = []
    for key, value in state_dict.items():
        if key not in random_sites:
            continue
        prior = random_sites[key]._pyro_samples[key.rpartition(".")[2]]
        if value.is_complex():  # refused below, with the advice for complex values
            continue
        if isinstance(prior, Prior) and prior.shape and tuple(value.shape) != prior.shape:
            mismatched.append(
                f"{key} is {tuple(value.shape)} in the checkpoint and {prior.shape} in its prior"
            )
    if mismatched:
        raise ValueError(
            f"the checkpoint does not have the shapes of the model's priors: {'; '.join(mismatched)}. The "
            "model was built with other sizes than the checkpoint's, or the rewrite read a shape wrongly "
            "from its initializer (`bayesify plan` shows the shapes it read)"
        )


def _nested_hint(state_dict: Mapping[str, object], expected: set) -> str:
    """Where the checkpoint holds the state dict under a key, as PyTorch's tutorial saves one
    (``{"epoch": ..., "model_state_dict": ...}``), DeepXDE's and Lightning's do: the key."""
    for key, value in state_dict.items():
        if isinstance(value, Mapping) and expected & set(value):
            return f"; the checkpoint holds the state dict under {key!r}: load checkpoint[{key!r}]"
    return ""


def _prefix_hint(missing: list, unexpected: list) -> str:
    """Where the checkpoint's keys are the model's under a prefix (Lightning saves a held
    network's as ``backbone.conv.weight``), or the model's are the checkpoint's (the model holds
    the saved network as ``self.wd``): the prefix, and how to load."""
    for prefix in (prefix for key in unexpected for prefix in _prefixes(key)):
        if missing and {key[len(prefix) :] for key in unexpected if key.startswith(prefix)} >= set(missing):
            return (
                f"; the checkpoint holds them under the prefix {prefix!r}: load "
                f"{{key.removeprefix({prefix!r}): value for key, value in checkpoint.items() "
                f"if key.startswith({prefix!r})}}"
            )
    for prefix in _prefixes(missing[0]) if missing else ():
        if all(key.startswith(prefix) for key in missing) and {key[len(prefix) :] for key in missing} <= set(
            unexpected
        ):
            return (
                f"; the model holds them under the prefix {prefix!r}: load "
                f"{{{prefix!r} + key: value for key, value in checkpoint.items()}}"
            )
    return ""


def _prefixes(key: str) -> Iterator[str]:
    """``a.``, ``a.b.``, ... of the key ``a.b.c``."""
    return (key[: index + 1] for index, character in enumerate(key) if character == ".")


def _source(cls: type) -> str:
    try:
        return inspect.getsourcefile(cls) or cls.__module__
    except TypeError:  # a class without a file (built in, or made at run time)
        return cls.__module__
