"""How :func:`~bayesify.runtime.fit`, the guides and :func:`~bayesify.runtime.predict` read
data: a network's inputs (a tensor, a tuple of them, a dict of them by keyword), batches of
inputs and targets, and the batches of a ``DataLoader``."""

import copy
import numbers
from typing import Callable, Iterable, Iterator, List, Mapping, Optional, Sequence, Union

import torch
from torch.utils.data import DataLoader, TensorDataset, default_collate

#: A network's input: one tensor, the tuple of the tensors it takes (``net(*inputs)``), or a
#: dict of them by keyword (``net(**inputs)``).
Inputs = Union[torch.Tensor, Sequence[torch.Tensor], Mapping[str, torch.Tensor]]
#: A batch ``(x, y)``, the network's inputs and the targets; or a dict holding both.
Batch = Union[Sequence[Union[torch.Tensor, Inputs]], Mapping[str, torch.Tensor]]


def as_batches(data: Union[Iterable[Batch], Batch]) -> Iterable[Batch]:
    """``data`` as an iterable of batches: one batch (``(x, y)``, its targets a tensor, its
    inputs tensors, or tuples and dicts of tensors and numbers, a graph network's
    ``(positions, index, molecules)``; or a dict of tensors) is a list of itself."""
    if isinstance(data, Mapping) and all(isinstance(part, torch.Tensor) for part in data.values()):
        return [data]
    if isinstance(data, (tuple, list)) and len(data) > 1 and isinstance(data[-1], torch.Tensor):
        if all(map(_holds_inputs, data[:-1])) and tensors_in(data[:-1]):
            return [tuple(data)]
    return data


def model_batches(data: Iterable[Batch], targets: Optional[str]) -> Iterable[Batch]:
    """The batches of ``data`` as a model takes them, ``model(*batch)``: for a supervised
    model (the key of its ``targets`` in a dict batch given), a batch of more than two tensors
    ``(x1, ..., xk, y)`` as ``((x1, ..., xk), y)``, and a dict batch as the dict of its inputs
    and its targets; for a model of one's own (``targets`` None), its parts in order."""
    if targets is None:
        return (_positional(batch) for batch in read_batches(data))
    return (inputs_and_targets(_refuse_a_library_batch(batch), targets) for batch in read_batches(data))


def _refuse_a_library_batch(batch: Batch) -> Batch:
    """``batch``, where it can be ``(x1, ..., xk, y)``: a library's batch object (chemprop's
    TrainingBatch(bmg, V_d, X_d, Y, w, lt_mask, gt_mask)), read by position, gave its last
    field as the targets (None, or a mask) and the others to the network."""
    fields = getattr(batch, "_fields", None)
    if isinstance(batch, (tuple, list)) and (
        (fields and len(fields) > 2) or (len(batch) > 1 and not isinstance(batch[-1], torch.Tensor))
    ):
        named = (
            f"{type(batch).__name__}({', '.join(fields)})"
            if fields
            else f"{type(batch).__name__} of {len(batch)}"
        )
        raise TypeError(
            f"a supervised model reads a batch as (x, y) or (x1, ..., xk, y), the targets last, and this "
            f"batch is a {named}, whose fields it would read by position, its last as the targets: give fit "
            "batches of (inputs, targets), from a DataLoader whose collate_fn returns them or an iterable "
            "that maps the loader's each time it is read (for chemprop's TrainingBatch b: (b.bmg, b.Y))"
        )
    return batch


def _positional(batch: Batch) -> Batch:
    if isinstance(batch, torch.Tensor):  # a model of one input: fit(model, guide, (x,)), a loader of x
        return (batch,)
    if isinstance(batch, Mapping):  # its keys would be the model's arguments
        raise TypeError(
            f"a model of one's own is called with a batch's parts in order, model(*batch), and this "
            f"batch is a dict (keys {', '.join(map(repr, batch))}): make the loader give tuples, or "
            "make the model with supervised(net, likelihood), which reads dict batches"
        )
    return batch


def inputs_and_targets(batch: Batch, targets: str) -> Batch:
    if isinstance(batch, Mapping):
        if targets not in batch:
            raise KeyError(
                f"a supervised model reads a dict batch's targets under {targets!r}, and this batch has "
                f"the keys {', '.join(map(repr, batch))}: name its key, supervised(..., targets='...')"
            )
        return {key: value for key, value in batch.items() if key != targets}, batch[targets]
    if not isinstance(batch, (tuple, list)):
        raise TypeError(
            f"a supervised model reads a batch as (x, y), (x1, ..., xk, y) or a dict, not a "
            f"{type(batch).__name__}: give batches of one of those, e.g. for PyTorch Geometric a "
            "DataLoader whose collate_fn makes a Batch b and returns ((b.x, b.edge_index, b.batch), b.y)"
        )
    return (tuple(batch[:-1]), batch[-1]) if len(batch) > 2 else batch


def called_on(fn: Callable, x: Inputs):
    """``fn`` on the inputs ``x``: ``fn(x)`` for a tensor, ``fn(*x)`` for a tuple, ``fn(**x)``
    for a dict."""
    if isinstance(x, Mapping):
        return fn(**x)
    return fn(*x) if isinstance(x, (tuple, list)) else fn(x)


def parts_of(value) -> Optional[list]:
    """The items of a tuple or list, or the values of a dict; ``None`` for anything else."""
    if isinstance(value, Mapping):
        return list(value.values())
    return list(value) if isinstance(value, (tuple, list)) else None


def tensors_in(value) -> List[torch.Tensor]:
    """The tensors in ``value``, in order: itself, or those its tuples, lists and dicts hold."""
    if isinstance(value, torch.Tensor):
        return [value]
    return [tensor for part in parts_of(value) or () for tensor in tensors_in(part)]


def _holds_inputs(value) -> bool:
    """Whether ``value`` is a tensor or a number, or tuples, lists and dicts of nothing else."""
    parts = parts_of(value)
    return isinstance(value, (torch.Tensor, numbers.Number)) or bool(parts) and all(map(_holds_inputs, parts))


def with_tensors(value, tensors: Iterator[torch.Tensor]):
    """``value`` with its tensors replaced, in the order of :func:`tensors_in`, by ``tensors``."""
    if isinstance(value, torch.Tensor):
        return next(tensors)
    if isinstance(value, dict):  # of its own type: an OrderedDict, transformers' ModelOutput
        replaced = copy.copy(value)
        for key, part in value.items():
            replaced[key] = with_tensors(part, tensors)
        return replaced
    if isinstance(value, Mapping):
        return {key: with_tensors(part, tensors) for key, part in value.items()}
    if isinstance(value, (tuple, list)):
        parts = [with_tensors(part, tensors) for part in value]
        return type(value)(*parts) if hasattr(value, "_fields") else type(value)(parts)  # a named tuple
    return value


def read_batches(data: Iterable[Batch]) -> Iterable[Batch]:
    """The batches of ``data``. A :class:`~torch.utils.data.DataLoader` that collates rows of a
    :class:`~torch.utils.data.TensorDataset` in this process gives the same batches as the
    dataset's tensors indexed with each batch's indices from its sampler: one indexing per
    tensor instead of a lookup per row and a stack, which costs a small network a sixth of
    its step."""
    if (
        isinstance(data, DataLoader)
        and isinstance(data.dataset, TensorDataset)
        and data.batch_sampler is not None
        and data.collate_fn is default_collate
        and data.num_workers == 0
        and not data.pin_memory
    ):
        return _indexed(data)
    return data


def _indexed(loader: DataLoader) -> Iterable[Batch]:
    batches = iter(loader.batch_sampler)
    # The random draw with which the loader's own iterator starts (its workers' seed), so
    # that the batches, and every random number after them, are those the loader gives.
    torch.empty((), dtype=torch.int64).random_(generator=loader.generator)
    for indices in batches:
        # index_select, not tensor[indices]: indexing with a list of ints takes torch's general
        # indexing path, about twice as long for a small batch.
        rows = torch.as_tensor(indices, dtype=torch.long)
        yield tuple(tensor.index_select(0, rows.to(tensor.device)) for tensor in loader.dataset.tensors)
