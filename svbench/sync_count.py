"""Count host-device synchronisation points: every place that reads a tensor's value on the host or whose
result's shape depends on tensor values, and every host-device copy. On a CPU they are cheap; on a GPU each
one stalls the queue, so the hot path's budget is counted (tests/test_tree_methods.py, experiments/sync_count.py,
experiments/gpu_check.py).

Two layers, so that what C++ does is seen too:
- aten ops, through a TorchDispatchMode: scalar reads (``.item()``, ``int()``, ``float()``, ``bool()`` and
  indexing with a 0-d tensor all reach ``_local_scalar_dense`` / ``item`` / ``is_nonzero``), ops whose output
  shape depends on values (``nonzero``, ``masked_select``, indexing with a boolean mask), and copies between
  devices (``.to``/``.cpu()``/``copy_`` across devices);
- Python calls that do not reach an aten op: ``.tolist()`` and ``torch.tensor`` from Python data (a
  host-to-device copy when the device is not the CPU).

    with count_syncs() as counts:
        generate(...)
    counts  # Counter({'tolist': 31, 'scalar_read': 4, 'tensor_from_python': 12, ...})
"""
from __future__ import annotations

import functools
from collections import Counter
from contextlib import contextmanager

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
SCALAR_READS = {aten._local_scalar_dense, aten.item, aten.is_nonzero}
VALUE_SHAPED = {aten.nonzero, aten.masked_select}
INDEXING = {aten.index, aten.index_put, aten.index_put_}
COPIES = {aten._to_copy, aten.copy_}


def _devices(args) -> set:
    return {a.device for a in args if isinstance(a, torch.Tensor)}


class _AtenSyncs(TorchDispatchMode):
    def __init__(self, counts: Counter):
        super().__init__()
        self.counts = counts

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        packet = func.overloadpacket
        if packet in SCALAR_READS:
            self.counts["scalar_read"] += 1
        elif packet in VALUE_SHAPED:
            self.counts[packet.__name__] += 1
        elif packet in INDEXING and any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1]):
            self.counts["boolean_mask"] += 1
        out = func(*args, **kwargs)
        if packet in COPIES and any(d != out.device for d in _devices(args[:2])):  # (dst, src) / (src,)
            self.counts["device_copy"] += 1
        return out


@contextmanager
def count_syncs():
    counts: Counter = Counter()
    original_tolist, original_tensor = torch.Tensor.tolist, torch.tensor

    @functools.wraps(original_tolist)
    def tolist(self, *args, **kwargs):
        counts["tolist"] += 1
        return original_tolist(self, *args, **kwargs)

    def tensor(data, *args, **kwargs):
        if not isinstance(data, torch.Tensor):
            counts["tensor_from_python"] += 1
        return original_tensor(data, *args, **kwargs)

    torch.Tensor.tolist, torch.tensor = tolist, tensor
    try:
        with _AtenSyncs(counts):
            yield counts
    finally:
        torch.Tensor.tolist, torch.tensor = original_tolist, original_tensor
