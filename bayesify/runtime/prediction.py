""":func:`predict`: what :class:`~pyro.infer.predictive.Predictive` computes, summarized by the
likelihood, in vectorised passes of several weight samples each."""

import contextlib
import traceback
import warnings
import weakref
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import pyro
import pyro.poutine as poutine
import torch
from pyro.poutine.messenger import Messenger
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.data import DataLoader, RandomSampler

from bayesify.runtime.batched import BATCHED_LAYERS, FunctionalLayers, SamplesInBatchMessenger
from bayesify.runtime.data import (
    Batch,
    Inputs,
    inputs_and_targets,
    read_batches,
    tensors_in,
    with_tensors,
)
from bayesify.runtime.inference import BayesianModel, _in_eval_mode, _keeping_frozen
from bayesify.runtime.likelihoods import Prediction
from bayesify.runtime.prior import LIBRARY_FOLDERS

#: How many rows (weight samples times inputs) one pass of :func:`predict` computes on a CPU.
CPU_ROWS_PER_PASS = 5_000
#: How many elements the widest output of an operation in one pass of :func:`predict` holds
#: on a CPU, at most (4 MB in single precision).
CPU_ELEMENTS_PER_PASS = 2**20
#: The same where a deterministic trunk computes once a pass (:class:`_ComputedOnce`): every
#: pass computes the trunk again, which costs more than the page faults of larger copies of
#: its output (a Mamba backbone's, 50 samples of 256 sequences: passes of 4 samples took
#: 6.0 s, of 25 samples 0.6 s).
CPU_ELEMENTS_PER_PASS_ONCE = 2**24


#: How many elements of random weights one draw of the guide for :func:`predict` holds, over
#: all the samples it draws at once, on a CPU (256 MB in single precision) and on a GPU (1 GB):
#: drawn for 100 samples at once, a U-Net's 14 million random weights took 7 GB.
CPU_WEIGHTS_PER_DRAW = 2**26
GPU_WEIGHTS_PER_DRAW = 2**28


def predict(
    model: BayesianModel,
    guide: Callable,
    x: Union[Inputs, DataLoader],
    num_samples: int = 100,
    *,
    samples_per_pass: Optional[int] = None,
    grad: bool = False,
) -> Prediction:
    """
    The model's predictions on ``x`` under ``num_samples`` weight samples from ``guide``,
    summarized by the model's likelihood: averaged class probabilities, or a predictive
    mean and standard deviation, with the predictive entropy and the epistemic spread (see
    :class:`~bayesify.runtime.Prediction`).

    It is what ``Predictive(model, guide=guide, num_samples=num_samples, parallel=True,
    return_sites=["_RETURN"])`` computes, without sampling the observations: the guide is
    sampled once, inside a plate of ``num_samples`` samples left of the data plate, and the
    network replayed on those weights, ``samples_per_pass`` samples at a time, one vectorised
    pass for all of them. That needs the network's layers to take a batch of weights
    (rewritten ``nn.Linear``, ``nn.ConvNd`` and ``nn.ConvTransposeNd`` layers do, see
    :mod:`bayesify.runtime.batched`). When the random sites are all weights and biases of such
    layers, a pass's samples travel in the network's own batch
    (:class:`~bayesify.runtime.batched.SamplesInBatchMessenger`), so code written for one
    batch dimension between the layers (``BatchNorm2d``, ``x.view(x.size(0), -1)``) computes
    as written; otherwise they keep a dimension of their own, left of the batch. Where a pass
    fails, it runs again with torch's functional forms routed to the batched layers
    (:class:`~bayesify.runtime.batched.FunctionalLayers`), for code that calls them with a
    layer's weight (``F.linear(x, self.qkv.weight)``, a Linear subclass with a forward of
    its own). The last sample of the first pass is computed again on its own, and must
    agree: a network can take a batch of samples and compute it wrongly (a graph network's
    messages between the rows of its batch, a dropout that stays on in eval mode). A network
    that fails either way runs once per sample, with a warning that says why. The network
    runs in eval mode (``BatchNorm`` with its running statistics, dropout off), and each
    module is left in the mode it was in; Pyro's validation is off: the guide's
    distributions were checked as it was fitted.

    :param x: the network's input, the tuple of its inputs, or the dict of them by keyword, as
        the model takes it (a dict batch without its targets); or a
        :class:`~torch.utils.data.DataLoader`, whose batches are read as :func:`fit` reads
        them, their targets left out (a batch of one tensor is the inputs alone), and
        predicted in its order under the same draw of weights (one that shuffles is refused).
        Several inputs travel in the batch only where each holds one row per example (a
        transformer's tokens and mask do; a graph network's edges do not, and its samples
        keep their own dimension, or a pass each).
    :param int samples_per_pass: how many samples one pass of the network computes. By
        default, on a GPU all of them; on a CPU, as many as make a pass's rows (samples times
        inputs) about :data:`CPU_ROWS_PER_PASS`, and fewer where a layer's outputs would hold
        more than :data:`CPU_ELEMENTS_PER_PASS` elements, so that they stay small (larger
        passes are slower there, smaller ones pay Pyro's cost of a replay more often).
        However many passes, the weights are those of one draw from the guide, which holds
        every sample's weights at once (as ``Predictive(parallel=True)`` does): the same
        predictions for the same seed. Where every sample's random weights would hold more
        than :data:`CPU_WEIGHTS_PER_DRAW` elements (:data:`GPU_WEIGHTS_PER_DRAW`), each draw
        holds as many samples as fit. ``1`` samples the guide and runs the network once per
        sample, without any plate, for a network whose layers cannot take a batch of weights
        (other draws of the same guide for the same seed).
    :param bool grad: run the network with autograd on, for a forward that differentiates
        itself (an interatomic potential's forces, ``-torch.autograd.grad(energy,
        positions)``); without it, as by default, nothing keeps a graph.
    """
    with torch.set_grad_enabled(grad), _keeping_frozen(model):
        try:
            return _predict(model, guide, x, num_samples, samples_per_pass)
        except RuntimeError as error:
            if not _needs_autograd(error):
                raise
            raise RuntimeError(
                f"{error}\npredict runs the network without autograd; for a forward that differentiates "
                "itself (forces as torch.autograd.grad(energy, positions)), pass grad=True"
            ) from error


def _needs_autograd(error: BaseException) -> bool:
    """Whether ``error`` is torch's where a forward differentiated itself without autograd."""
    return (
        isinstance(error, RuntimeError)
        and not torch.is_grad_enabled()
        and "does not require grad" in str(error)
    )


def _predict(
    model: BayesianModel,
    guide: Callable,
    x: Union[Inputs, DataLoader],
    num_samples: int,
    samples_per_pass: Optional[int],
) -> Prediction:
    if not isinstance(model, BayesianModel):
        raise TypeError(
            f"predict takes a model made by supervised(net, likelihood), not a {type(model).__name__}: it "
            "replays the network on the guide's draws and summarizes its outputs by the likelihood. For a "
            "model of your own, Pyro's Predictive(model, guide=guide, num_samples=100, return_sites=[...]) "
            "gives its sites' samples; or make its observation a likelihood with a summarize(outputs), as "
            "docs/runtime.md shows for a density"
        )
    batches = _prediction_inputs(model, x)
    outputs = None
    with pyro.validation_enabled(False), _in_eval_mode(model.net):
        _set_up(guide, batches[0])
        if samples_per_pass != 1:
            try:
                parts = [
                    _in_passes(model, guide, batches, count, samples_per_pass)
                    for count in _draws(guide, batches[0], num_samples)
                ]
                outputs = parts[0] if len(parts) == 1 else torch.cat(parts)  # one draw: no copy
            except Exception as error:
                if _needs_autograd(error):
                    raise  # it fails a sample at a time as well: predict says what to pass
                warnings.warn(
                    f"predict: the network did not take a batch of weight samples ({_described(error)}); "
                    "it runs once per sample instead, as with samples_per_pass=1, which skips this try",
                    stacklevel=3,
                )
        if outputs is None:
            outputs = torch.stack(
                [
                    _joined([_replayed(model, weights, inputs) for inputs in batches], dim=0)
                    for weights in (poutine.trace(guide).get_trace(batches[0]) for _ in range(num_samples))
                ]
            )
    return model.likelihood.summarize(outputs.detach())


def _described(error: BaseException) -> str:
    """``error``'s type, message and where it was raised: in the network's code rather than
    torch's, Pyro's or this runtime's, where it passed through them (a bare ``assert`` in a
    library's forward has nothing else to say)."""
    frames = traceback.extract_tb(error.__traceback__)
    frame = next(
        (each for each in reversed(frames) if not each.filename.startswith(LIBRARY_FOLDERS)), frames[-1]
    )
    message = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return "; ".join(
        [f"{message}, raised at {frame.filename}:{frame.lineno}", *getattr(error, "__notes__", ())]
    )


def _set_up(guide: Callable, x: Inputs) -> None:
    """Makes an autoguide's parameters (its first call runs the model, which draws from the
    priors) without drawing from the random numbers the caller seeded: a guide's first
    ``predict`` gives what its later ones give for the same seed."""
    if getattr(guide, "prototype_trace", False) is not None:
        return
    with _aside(x):
        guide(x)


def _draws(guide: Callable, x: Inputs, num_samples: int) -> List[int]:
    """How many samples each draw of the guide holds: all of them, where their random weights
    fit in :data:`CPU_WEIGHTS_PER_DRAW` (:data:`GPU_WEIGHTS_PER_DRAW`), else as many as do."""
    on_gpu = any(tensor.is_cuda for tensor in tensors_in(x))
    budget = GPU_WEIGHTS_PER_DRAW if on_gpu else CPU_WEIGHTS_PER_DRAW
    prototype = getattr(guide, "prototype_trace", None)
    if prototype is not None:
        weights = sum(site["value"].numel() for _, site in prototype.iter_stochastic_nodes())
        if weights * num_samples <= budget:
            return [num_samples]
    # What a draw holds for each sample: two samples of the guide, and the values that differ
    # between them in memory (a Laplace guide's point masses are one value, expanded), each
    # memory once (its sites are views of one latent vector).
    with _aside(x), pyro.plate(_SAMPLES, 2, dim=-2):
        trace = poutine.trace(guide).get_trace(x)
    held: Dict[int, int] = {}
    for _, site in trace.iter_stochastic_nodes():
        value = site["value"]
        if value.dim() and len(value) == 2 and value.stride(0):
            memory = value.untyped_storage().data_ptr()
            held[memory] = max(held.get(memory, 0), value.numel() // 2)
    weights = sum(held.values())
    per_draw = max(1, budget // max(weights, 1))
    return [min(per_draw, num_samples - start) for start in range(0, num_samples, per_draw)]


@contextlib.contextmanager
def _aside(x: Inputs):
    """Pyro statements that leave no trace, on random numbers that leave the caller's as they
    were (a guide's first call, a look at what it draws)."""
    devices = [tensor.device for tensor in tensors_in(x) if tensor.is_cuda][:1]
    with torch.random.fork_rng(devices=devices), poutine.block():
        yield


def _prediction_inputs(model: BayesianModel, x: Union[Inputs, DataLoader]) -> List[Inputs]:
    """The inputs of each batch that :func:`predict` computes: ``x``, or a loader's batches
    without their targets."""
    if not isinstance(x, DataLoader):
        return [x]
    if isinstance(x.sampler, RandomSampler):
        raise ValueError(
            "predict reads a DataLoader in its order, and this one shuffles its rows (shuffle=True): "
            "the predictions could not be matched to their inputs; predict with a loader made with "
            "shuffle=False"
        )
    batches = [_without_targets(batch, model.targets) for batch in read_batches(x)]
    if not batches:
        raise ValueError("predict: the DataLoader gave no batches")
    return batches


def _without_targets(batch: Batch, targets: str) -> Inputs:
    if isinstance(batch, Mapping):
        return {key: value for key, value in batch.items() if key != targets}
    return batch[0] if len(batch) == 1 else inputs_and_targets(batch, targets)[0]


def _joined(outputs: List[torch.Tensor], dim: int) -> torch.Tensor:
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim)


def _in_passes(
    model: BayesianModel,
    guide: Callable,
    batches: List[Inputs],
    num_samples: int,
    samples_per_pass: Optional[int],
) -> torch.Tensor:
    """The network's outputs on every batch of inputs for ``num_samples`` weight samples, a
    vectorised pass for several samples at a time."""
    # One trace of the guide for every sample and every batch (its cost is Pyro's, per site,
    # whatever the number of samples), and the network on slices of it.
    with _DrawnInPlace(), pyro.plate(_SAMPLES, num_samples, dim=-2):
        weights = poutine.trace(guide).get_trace(batches[0])

    # A layer's widest output a row is the network's, whichever batch and whichever try below;
    # with the trunks computed once a pass, the widest of what computes once a sample.
    widest = _widest_output(model, weights, batches[0]) if samples_per_pass is None else 0
    trunks = _deterministic_trunks(model.net)
    widest_each = (
        _widest_output_each_sample(model, weights, batches[0], num_samples, trunks) if trunks else None
    )
    if widest_each is None:
        trunks = []
    per_pass = {
        once: [_per_pass(x, num_samples, samples_per_pass, width, budget) for x in batches]
        for once, width, budget in [
            (False, widest, CPU_ELEMENTS_PER_PASS),
            (True, widest_each, CPU_ELEMENTS_PER_PASS_ONCE),
        ]
    }

    def every_batch(any_module: bool = False) -> torch.Tensor:
        if trunks:
            # A trunk computed once a pass is a guess about the network's code (that its
            # modules compute row by row): the passes as they were decide where it fails,
            # unless none was computed once and they would fail alike.
            computed: List[torch.nn.Module] = []
            try:
                return passes(any_module, trunks, computed)
            except Exception:
                if not computed:
                    raise
        return passes(any_module, [], [])

    def passes(any_module: bool, trunks: List[torch.nn.Module], computed: list) -> torch.Tensor:
        return _joined(
            [
                _passes(model, weights, x, num_samples, size, any_module, trunks, computed)
                for x, size in zip(batches, per_pass[bool(trunks)])
            ],
            dim=1,
        )

    try:
        return every_batch()
    except DisagreeingSampleError:
        raise
    except Exception as error:
        first_error = error
    # Among the causes, a layer called through torch's functional forms, which refuses a
    # batch of weights: FunctionalLayers routes it to the batched layers, at the cost of a
    # Python call for every torch call of a pass (5% of a small MLP's prediction), which only
    # the networks that need it pay. A layer the rewrite does not know (transformers' Conv1D,
    # addmm on rows it flattens itself) takes its samples only in the batch: last, they
    # travel there for any module's weight, the check telling whether it computed right.
    with FunctionalLayers():
        try:
            return every_batch()
        except DisagreeingSampleError:
            raise
        except Exception as error:
            routed_error = error
        try:
            return every_batch(any_module=True)
        except Exception:  # a disagreement too: this layout was a guess, the first error says why
            # What stopped the network once its layers took the samples (schnetpack's sum of atoms'
            # energies into molecules, after a Dense layer that calls F.linear itself).
            if str(routed_error) != str(first_error):
                first_error.add_note(
                    f"with torch's functional forms routed to the batched layers, {_described(routed_error)}"
                )
            raise first_error from None


def _per_pass(
    x: Inputs,
    num_samples: int,
    samples_per_pass: Optional[int],
    widest: int,
    budget: int = CPU_ELEMENTS_PER_PASS,
) -> int:
    """How many samples a pass on ``x`` computes: ``samples_per_pass``, or by default every
    sample on a GPU; on a CPU, about :data:`CPU_ROWS_PER_PASS` rows, and fewer where an
    operation's outputs, ``widest`` elements a row, would hold more than ``budget``. A
    convolution's outputs are tens of times its inputs: beyond a few megabytes, torch's
    allocator on a CPU maps fresh memory for every tensor, and its page faults cost more than
    the pass."""
    if samples_per_pass is None:
        inputs = tensors_in(x)
        if inputs and inputs[0].device.type != "cpu":
            return num_samples
        rows = len(inputs[0]) if inputs and inputs[0].dim() else 1
        samples_per_pass = CPU_ROWS_PER_PASS // rows
        if widest:
            samples_per_pass = min(samples_per_pass, budget // (widest * rows))
    return max(1, min(samples_per_pass, num_samples))


def _widest_output(model: BayesianModel, weights: poutine.Trace, x: Inputs) -> int:
    """The most elements an operation of the network outputs for one row of the inputs ``x``
    on a CPU and one sample of the weights, from runs on the first row and the first two (0
    where the inputs are no rows of examples, are on a GPU, or the network cannot run on a
    row). Every operation's, not only every module's: an attention's logits, computed between
    its layers, are tokens times tokens a head. What does not grow with the rows (a masked
    layer's ``weight * mask``, a flow's) counts once for all of them, not once a row."""
    inputs = tensors_in(x)
    rows = _rows(inputs)
    if rows is None or inputs[0].device.type != "cpu":
        return 0
    probes = []
    for count in (1, 2) if rows > 1 else (1,):
        recorder = _WidestOutputs()
        try:
            with recorder:
                _replayed(model, _one_draw(weights, 0), with_tensors(x, iter(_first_rows(x, count))))
        except Exception:  # the passes will say what fails, if anything
            break
        probes.append(recorder.sizes)
    if not probes:
        return 0
    if len(probes) == 1 or len(probes[0]) != len(probes[1]):  # one row, or another path for two
        return max(probes[0], default=0)
    # An output of c + r elements for one row and c + 2r for two: r a row, c for all of them.
    return max((two - one + -(-(2 * one - two) // rows) for one, two in zip(*probes)), default=0)


def _widest_output_each_sample(
    model: BayesianModel,
    weights: poutine.Trace,
    x: Inputs,
    num_samples: int,
    trunks: Sequence[torch.nn.Module],
) -> Optional[int]:
    """As :func:`_widest_output`, of the operations that a pass with ``trunks`` computed once
    (:class:`_ComputedOnce`) computes for every sample, a trunk's output copied for each
    included, from a pass of two samples on the first row; None where no trunk computes once
    in it (the network reads none with nothing but the inputs' copies, or fails so)."""
    first = _first_rows(x)
    if first is None:
        return None
    count = min(2, num_samples)  # samples that differ, as a pass's do
    copies = [row.repeat(count, *(1,) * (row.dim() - 1)) for row in first]
    once = _ComputedOnce(trunks, count, 1, dict(zip(copies, first)))
    recorder = _WidestOutputs(once)
    try:
        with pyro.plate(_SAMPLES, count, dim=-2), SamplesInBatchMessenger(count), once, recorder:
            _replayed(model, _sliced(weights, 0, count), with_tensors(x, iter(copies)))
    except Exception:  # the passes will say what fails, if anything
        return None
    if not once.computed or once.draws:  # a trunk's own random numbers: one draw a sample, as written
        return None
    return -(-recorder.widest_outside // count)


def _first_rows(x: Inputs, count: int = 1) -> Optional[List[torch.Tensor]]:
    """The first ``count`` rows of each of the inputs ``x``; None where they are no rows of
    examples."""
    inputs = tensors_in(x)
    return None if _rows(inputs) is None else [input[:count] for input in inputs]


def _rows(inputs: List[torch.Tensor]) -> Optional[int]:
    """How many rows of examples each of ``inputs`` holds; None where they hold none, or not
    as many (a graph network's edges)."""
    rows = len(inputs[0]) if inputs and inputs[0].dim() else None
    if rows is None or any(not input.dim() or len(input) != rows for input in inputs):
        return None
    return rows


class _WidestOutputs(TorchDispatchMode):
    """Records how many elements each tensor that an operation makes holds (views, which make
    none, left out), in order; and the most of those made while ``once`` computes no trunk."""

    def __init__(self, once: Optional["_ComputedOnce"] = None) -> None:
        super().__init__()
        self.widest_outside = 0
        self.sizes: List[int] = []  # of every tensor made, in order
        self._once = once

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # Nothing compiles this mode: wrapping it to skip Dynamo would import torch._dynamo, about
        # a second, at the first prediction of a process.
        return False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        output = func(*args, **(kwargs or {}))
        if not func.is_view:
            width = max([0, *(tensor.numel() for tensor in tensors_in(output))])
            self.sizes.append(width)
            if self._once is None or not self._once.inside:
                self.widest_outside = max(self.widest_outside, width)
        return output


def _passes(
    model: BayesianModel,
    weights: poutine.Trace,
    x: Inputs,
    num_samples: int,
    samples_per_pass: int,
    any_module: bool = False,
    trunks: Sequence[torch.nn.Module] = (),
    computed: Optional[list] = None,
) -> torch.Tensor:
    """The network's outputs on the sampled ``weights``, ``samples_per_pass`` samples a pass;
    the samples in the batch where every random site is a batched layer's weight or bias
    (with ``any_module``, any module's), each of ``trunks`` computed once a pass where it reads
    nothing but the inputs' copies (see :class:`_ComputedOnce`; each one so computed is
    appended to ``computed``)."""
    inputs = tensors_in(x)  # those of a dict that one argument holds too
    size = _rows(inputs)
    # The samples travel in the batch where nothing but the layers meets them and every input
    # is one row per example (a graph network's edges are not): the inputs once per sample,
    # made once for all passes.
    repeated = None
    if size is not None and _only_layer_weights(model.net, weights, any_module):
        repeated = [input.repeat(samples_per_pass, *(1,) * (input.dim() - 1)) for input in inputs]
    outputs = None
    for start in range(0, num_samples, samples_per_pass):
        stop = min(start + samples_per_pass, num_samples)
        count = stop - start
        with pyro.plate(_SAMPLES, count, dim=-2):
            if repeated is not None:
                rows = [batch[: count * size] for batch in repeated]
                shared = (inputs[0], rows[0]) if len(inputs) == 1 else None
                once = (
                    _ComputedOnce(trunks, count, size, dict(zip(rows, inputs)), computed)
                    if trunks and count > 1
                    else contextlib.nullcontext()
                )
                with SamplesInBatchMessenger(count, shared=shared), once:
                    output = _replayed(model, _sliced(weights, start, stop), with_tensors(x, iter(rows)))
                output = output.reshape(count, size, *output.shape[1:])
            else:
                output = _replayed(model, _sliced(weights, start, stop), x)
        # Into one tensor as each pass ends, rather than concatenated at the end: a pass's
        # output kept would sit in memory its activations freed, and the next pass's
        # activations would need fresh memory (on a CPU, pages to fault in) every pass.
        if outputs is None:
            _check_last_sample(model, weights, x, output, count)
            outputs = output.new_empty((num_samples, *output.shape[1:]))
        outputs[start:stop] = output
        del output
    return outputs


def _deterministic_trunks(net: torch.nn.Module) -> List[torch.nn.Module]:
    """The largest modules of ``net`` that hold no random weight: a classifier's backbone
    before its random head, and the modules between (a positional embedding before the layers
    that read it). None where nothing in ``net`` is random."""
    random: set = set()
    for module in reversed(list(net.modules())):  # every module after those it holds
        if module.__dict__.get("_pyro_samples") or any(id(child) in random for child in module.children()):
            random.add(id(module))
    trunks = []
    for module in net.modules():
        if id(module) in random:
            for child in module.children():
                if id(child) not in random:
                    trunks.extend(_called_parts(child))
    return trunks


def _called_parts(module: torch.nn.Module) -> List[torch.nn.Module]:
    """``module``, or where it is a container that is never called (``nn.ModuleList``,
    ``nn.ModuleDict``: no forward of its own), the parts of it that are."""
    if type(module).forward is not torch.nn.Module.forward:
        return [module]
    return [part for child in module.children() for part in _called_parts(child)]


class _ComputedOnce(TorchFunctionMode):
    """
    While a pass's batch holds the inputs once per sample (``x.repeat(count, 1)``), computes
    each of ``trunks`` that is called with nothing but such copies on the inputs themselves,
    once, and gives its output once per sample in the same way: a deterministic backbone
    before a random head computes once a pass, not once a sample. The output of a trunk so
    computed is a copy too, for the next one, and so is what a torch function computes from
    copies where it is, element for element, ``count`` blocks each equal to the function of
    the inputs themselves (``x.unsqueeze(-1)`` between two trunks). A copy changed in place
    is no copy any more. An output that is not one row per input is computed again on the
    copies, as the network wrote it.

    :param trunks: modules that hold no random weight.
    :param int count: the samples of the pass.
    :param int rows: the inputs' rows.
    :param dict copies: each copy in the batch, by the inputs it repeats.
    :param list computed: where to append each trunk computed once.
    """

    def __init__(
        self,
        trunks: Sequence[torch.nn.Module],
        count: int,
        rows: int,
        copies: Mapping[torch.Tensor, torch.Tensor],
        computed: Optional[list] = None,
    ) -> None:
        super().__init__()
        self.trunks = trunks
        self.count = count
        self.rows = rows
        self.computed = [] if computed is None else computed
        #: How many trunk calls computing once are under way (what runs now runs once a pass).
        self.inside = 0
        #: Whether a trunk computed once drew random numbers of its own (a sampling layer,
        #: a dropout left on), which computed once every sample of the pass would share.
        self.draws = False
        self._copies: Dict[int, tuple] = {}
        for copy, original in copies.items():
            self._register(copy, original)
        self._called: List[Optional[tuple]] = []  # a trunk's arguments and random state, or None
        self._hooks: list = []

    def __enter__(self) -> "_ComputedOnce":
        for trunk in self.trunks:
            self._hooks.append(trunk.register_forward_pre_hook(self._on_originals, with_kwargs=True))
            self._hooks.append(
                trunk.register_forward_hook(self._repeated, with_kwargs=True, always_call=True)
            )
        return super().__enter__()

    def __exit__(self, *exc_info) -> None:
        for hook in self._hooks:
            hook.remove()
        super().__exit__(*exc_info)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        if not (isinstance(result, torch.Tensor) and result.dim() and len(result) == self.count * self.rows):
            return result
        if any(tensor is result for tensor in tensors_in((args, kwargs))):
            return result  # an in-place function
        originals = self._on_originals_of(args, kwargs, only_copies=False)  # a parameter added too
        if originals is None:
            return result
        try:
            on_originals = func(*originals[0], **originals[1])
        except Exception:  # sizes read from the copies (x.view(len(x), -1)): computed as written
            return result
        if (
            isinstance(on_originals, torch.Tensor)
            and on_originals.shape == (self.rows, *result.shape[1:])
            and torch.equal(
                result.unflatten(0, (self.count, self.rows)),
                on_originals.expand(self.count, *on_originals.shape),
            )
        ):
            self._register(result, on_originals)
        return result

    def _register(self, copy: torch.Tensor, original: torch.Tensor) -> None:
        # Held while the copy lives, no longer: a pass's copies would otherwise stay in memory
        # to its end, where torch frees each activation after its use.
        key = id(copy)
        self._copies[key] = (
            weakref.ref(copy, lambda _: self._copies.pop(key, None)),
            copy._version,
            original,
        )

    def _original(self, value) -> Optional[torch.Tensor]:
        entry = self._copies.get(id(value)) if isinstance(value, torch.Tensor) else None
        if entry is None or entry[0]() is not value or value._version != entry[1]:
            return None  # no copy, or one changed in place since (h += ..., h[mask] = ...)
        return entry[2]

    def _on_originals_of(self, args: tuple, kwargs: dict, only_copies: bool) -> Optional[Tuple[tuple, dict]]:
        """``args`` and ``kwargs`` with each copy replaced by what it repeats, in lists, tuples
        and dicts too (segmentation_models_pytorch's decoders take the encoder's features as a
        list); None where they hold no copy, or (``only_copies``) a tensor that is no copy."""
        tensors = tensors_in((args, kwargs))
        originals = [self._original(tensor) for tensor in tensors]
        found = sum(original is not None for original in originals)
        if not found or only_copies and found < len(tensors):
            return None
        swapped = (tensor if original is None else original for tensor, original in zip(tensors, originals))
        return with_tensors((args, kwargs), swapped)

    def _on_originals(self, module, args, kwargs):
        originals = self._on_originals_of(args, kwargs, only_copies=True)
        self._called.append(None if originals is None else (args, kwargs, torch.get_rng_state()))
        if originals is not None:
            self.computed.append(module)
            self.inside += 1
        return originals

    def _repeated(self, module, args, kwargs, output):
        called = self._called.pop()
        if called is None:
            return None
        self.inside -= 1
        if output is None:  # it raised (or returns nothing): the error goes on as it is
            return None
        if not torch.equal(called[2], torch.get_rng_state()):
            self.draws = True
        parts = tensors_in(output)
        if parts and all(part.dim() and len(part) == self.rows for part in parts):
            return with_tensors(output, iter([self._copy(part) for part in parts]))
        return module.forward(*called[0], **called[1])

    def _copy(self, original: torch.Tensor) -> torch.Tensor:
        copy = original.repeat(self.count, *(1,) * (original.dim() - 1))
        self._register(copy, original)
        return copy


#: The name of :func:`predict`'s plate of weight samples.
_SAMPLES = "predictive_samples"


class _DrawnInPlace(Messenger):
    """
    Draws a sample site of a normal distribution (or an :class:`~torch.distributions.Independent`
    one) as ``Normal.rsample`` does, ``loc + eps * scale``, bit for bit (the same standard
    normals, the same products and sums), computed into ``eps``: without two more tensors of
    the size of every sample's weights, each fresh memory on a CPU.
    """

    def _pyro_sample(self, msg) -> None:
        if msg["done"] or msg["is_observed"] or msg["value"] is not None or msg["args"] or msg["kwargs"]:
            return
        normal = msg["fn"]
        if (
            isinstance(normal, torch.distributions.Independent)
            and type(normal).rsample is _INDEPENDENT_RSAMPLE
        ):
            normal = normal.base_dist
        if getattr(type(normal), "rsample", None) is not _NORMAL_RSAMPLE or torch._C._get_tracing_state():
            return
        eps = torch.empty(normal.batch_shape, dtype=normal.loc.dtype, device=normal.loc.device).normal_()
        msg["value"] = eps.mul_(normal.scale).add_(normal.loc)


_NORMAL_RSAMPLE = torch.distributions.Normal.rsample
_INDEPENDENT_RSAMPLE = torch.distributions.Independent.rsample


def _sliced(weights: poutine.Trace, start: int, stop: int) -> poutine.Trace:
    """The sampled sites of ``weights``, each value narrowed to samples ``start:stop`` along the
    dimension of the plate of samples (a site that does not vary along it is kept whole)."""
    return _each_site(weights, lambda value, dim, event_dim: value.narrow(dim, start, stop - start))


def _one_draw(weights: poutine.Trace, index: int) -> poutine.Trace:
    """The sampled sites of ``weights`` at sample ``index``, shaped as one draw outside the
    plate of samples: without its dimension, nor the dimensions of size one left of it."""

    def select(value: torch.Tensor, dim: int, event_dim: int) -> torch.Tensor:
        value = value.select(dim, index)
        while value.dim() > event_dim and value.shape[0] == 1:
            value = value[0]
        return value

    return _each_site(weights, select)


def _each_site(weights: poutine.Trace, take: Callable) -> poutine.Trace:
    """The sampled sites of ``weights``, each value ``take(value, dim, event_dim)`` where it
    varies along the plate of samples, ``dim`` its dimension (else kept whole)."""
    taken = poutine.Trace()
    for name, site in weights.nodes.items():
        if site["type"] != "sample" or site["is_observed"]:
            continue
        value, event_dim = site["value"], site["fn"].event_dim
        for frame in site["cond_indep_stack"]:
            if frame.name == _SAMPLES:
                dim = value.dim() - event_dim + frame.dim
                if dim >= 0 and value.shape[dim] == frame.size:
                    value = take(value, dim, event_dim)
        taken.add_node(name, type="sample", value=value, infer=site["infer"], is_observed=False)
    return taken


def _check_last_sample(
    model: BayesianModel, weights: poutine.Trace, x: Inputs, computed: torch.Tensor, count: int
) -> None:
    """Raises where the first pass's outputs, ``computed``, hold no first dimension of its
    ``count`` samples, or their last is not the network's outputs on that sample's weights
    alone. A network can take a batch of samples and still
    compute them wrongly (a graph network's messages between the rows of its batch, an
    indexing of the first dimension, a dropout that stays on in eval mode): one pass of one
    sample is what it costs to know.

    They agree when they differ by no more than rounding (a thousandth of the outputs' size,
    a few hundredths in half precision) or no more than a tenth of the difference between
    the pass's first and last samples: in single precision a deep network started far from
    training (weights drawn from a wide prior) amplifies the rounding of another order of
    the same sums to a hundredth, which is no wrong computation and leaves the samples'
    spread as it is."""
    if not computed.dim() or len(computed) != count:
        # An expand to the inputs' shape swallows a pass's one sample's dimension (where the
        # inputs are one row too, the shapes compared below differ).
        raise ValueError(
            f"the network's output {tuple(computed.shape)} has no first dimension of the pass's "
            f"{count} weight samples: a random parameter broadcast to the inputs' shape (an "
            "expand or view of it by their sizes) loses the samples' dimension"
        )
    index = count - 1  # the first pass's samples are the draw's first
    alone, last = _replayed(model, _one_draw(weights, index), x).detach(), computed[-1].detach()
    if alone.shape != last.shape:
        raise ValueError(
            f"sample {index} has the shape {tuple(last.shape)} in one pass with others, "
            f"{tuple(alone.shape)} alone"
        )
    if not alone.numel():
        return
    allowed = 0.0
    if alone.is_floating_point():
        rounding = max(1e-3, torch.finfo(alone.dtype).eps ** 0.5) * float(alone.abs().max())
        allowed = max(rounding, 0.1 * float((computed[0].detach() - last).abs().max()))
    if not float((last - alone).abs().max()) <= allowed:  # not: a NaN disagrees too
        raise DisagreeingSampleError(
            f"sample {index}, computed with others in one pass, differs from the network run on its "
            "weights alone: the network mixes the rows of its batch or indexes its first dimension, "
            "or samples by itself (a dropout that stays on in eval mode)"
        )


class DisagreeingSampleError(ValueError):
    """A pass computed without an error, and wrongly."""


def _replayed(model: BayesianModel, weights: poutine.Trace, x: Inputs) -> torch.Tensor:
    return poutine.replay(model.network, trace=weights)(x)


def _only_layer_weights(net: torch.nn.Module, weights: poutine.Trace, any_module: bool = False) -> bool:
    """Whether every weight sampled in ``weights`` is the weight or bias of one of ``net``'s
    batched layers (:mod:`bayesify.runtime.batched`; with ``any_module``, of any module), so
    that nothing else meets the samples."""
    modules = dict(net.named_modules(remove_duplicate=False))  # a layer held twice: either name
    layers = torch.nn.Module if any_module else BATCHED_LAYERS
    for name, site in weights.iter_stochastic_nodes():
        if site["infer"].get("is_auxiliary"):
            continue
        owner, _, attribute = name.rpartition(".")
        if attribute not in ("weight", "bias") or not isinstance(modules.get(owner), layers):
            return False
    return True
