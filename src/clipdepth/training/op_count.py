"""Counting what a training step asks of the device and of the host, op by op.

``count_ops()`` is a ``TorchDispatchMode``: it sees every aten op the code in its block dispatches,
forward and backward alike, on any device (the CPU included), so a step's launch and sync profile
can be checked without an accelerator. On CUDA each op that computes is about one kernel launch
(views, allocations and reads to the host launch none and are not counted); foreach/fused ops
launch one kernel per chunk of their tensor list.

A host sync is an op whose result the host must wait for the device to produce:

- ``aten._local_scalar_dense`` (``.item()``, ``bool(tensor)``, ``.tolist()``, ``int(tensor)``),
  ``aten.is_nonzero``, ``aten.equal``;
- ops whose output size depends on the data: ``nonzero``, ``masked_select``, ``unique`` (all
  forms), ``repeat_interleave`` without ``output_size``, and ``index`` / ``index_put`` with a
  boolean mask (``x[mask]``, ``x[mask] = v``);
- a copy from host memory to another device (``tensor.to("cuda")`` of a tensor made on the host),
  unless from pinned memory with ``non_blocking=True``, which the host does not wait for.

``torch.cuda.set_sync_debug_mode("error")`` is the same check on a GPU.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

# Ops that always read a device value on the host or size their output by the data (every overload).
SYNC_OPS = frozenset(
    {
        aten._local_scalar_dense,
        aten.is_nonzero,
        aten.equal,
        aten.nonzero,
        aten.masked_select,
        aten._unique,
        aten._unique2,
        aten.unique_dim,
        aten.unique_consecutive,
    }
)
_INDEX_OPS = frozenset({aten.index.Tensor, aten.index_put.default, aten.index_put_.default, aten._index_put_impl_.default})
_COPY_OPS = frozenset({aten._to_copy.default, aten.copy_.default, aten._copy_from.default})
# Dispatched but launching nothing: reads to the host, allocations (the caching allocator's),
# ``_unsafe_view`` (a view by another name) and the profiler's markers (an optimiser step records one).
_NOT_KERNELS = frozenset(
    {
        aten._local_scalar_dense,
        aten._unsafe_view,
        aten.empty,
        aten.empty_like,
        aten.empty_strided,
        aten.new_empty,
        aten.new_empty_strided,
        torch.ops.profiler._record_function_enter_new,
        torch.ops.profiler._record_function_exit,
    }
)


@dataclass
class OpCount:
    """What one block dispatched: ``kernels`` (ops that compute, views excluded), ``host_syncs``,
    and the names of both, for a report of which op it was."""

    kernels: int = 0
    host_syncs: int = 0
    ops: Counter = field(default_factory=Counter)
    syncs: Counter = field(default_factory=Counter)


def _is_host_sync(func, args, kwargs, out) -> bool:
    if func.overloadpacket in SYNC_OPS:
        return True
    if func.overloadpacket is aten.repeat_interleave:
        return kwargs.get("output_size") is None
    if func in _INDEX_OPS:
        indices = args[1] if len(args) > 1 else kwargs.get("indices", ())
        return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices)
    if func in _COPY_OPS:
        source = args[1] if func is aten.copy_.default else args[0]
        target = out if func is not aten.copy_.default else args[0]
        non_blocking = (
            kwargs.get("non_blocking", False)
            if func is aten._to_copy.default
            else (len(args) > 2 and bool(args[2])) or kwargs.get("non_blocking", False)
        )
        return (
            isinstance(source, torch.Tensor)
            and isinstance(target, torch.Tensor)
            and source.device.type == "cpu"
            and target.device.type not in ("cpu", "meta")
            and not (non_blocking and source.is_pinned())
        )
    return False


class count_ops(TorchDispatchMode):  # noqa: N801 - used as a context manager, like torch's own modes
    """``with count_ops() as counted: step()`` then ``counted.count.kernels`` / ``.host_syncs``."""

    def __init__(self) -> None:
        super().__init__()
        self.count = OpCount()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = str(func.overloadpacket.__name__)
        if _is_host_sync(func, args, kwargs, out):
            self.count.host_syncs += 1
            self.count.syncs[name] += 1
        if not func.is_view and func.overloadpacket not in _NOT_KERNELS:
            self.count.kernels += 1
            self.count.ops[name] += 1
        return out
