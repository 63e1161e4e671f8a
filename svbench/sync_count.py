"""Count host-device synchronisation points: every place that reads a tensor's value on the host or whose
result's shape depends on tensor values, and every host-device copy. On a CPU they are cheap; on a GPU each
one stalls the queue, so the hot path's budget is counted (tests/test_tree_methods.py, experiments/sync_count.py,
experiments/gpu_check.py).

Two layers, so that what C++ does is seen too:
- aten ops, through a TorchDispatchMode: scalar reads (``.item()``, ``int()``, ``float()``, ``bool()``,
  ``torch.equal`` and indexing with a 0-d tensor reach ``_local_scalar_dense`` / ``item`` / ``is_nonzero`` /
  ``equal``), ops whose output shape depends on values (``nonzero``, one-argument ``where``, ``argwhere``,
  ``masked_select``, ``unique``, ``bincount``, ``repeat_interleave`` by a tensor, reading through a boolean mask:
  ``value_shaped``), and copies between devices (``.to``/``.cpu()``/``copy_`` across devices: ``device_copy``);
- Python calls that do not reach an aten op: ``.tolist()`` and ``torch.tensor`` from Python data (a
  host-to-device copy when the device is not the CPU).

    with count_syncs() as counts:
        generate(...)
    counts  # Counter({'tolist': 31, 'tensor_from_python': 12, 'scalar_read': 4, ...})
"""
from __future__ import annotations

import functools
from collections import Counter
from contextlib import contextmanager

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
SCALAR_READS = {aten._local_scalar_dense, aten.item, aten.is_nonzero, aten.equal}
# outputs whose shape depends on values (under inference_mode composite ops arrive whole: where, argwhere, ...)
VALUE_SHAPED = {aten.nonzero, aten.nonzero_numpy, aten.argwhere, aten.masked_select, aten._unique2, aten.unique_dim,
                aten.unique_consecutive, aten.bincount}
COPIES = {aten._to_copy, aten.to, aten.copy_}


def _devices(args) -> set:
    return {a.device for a in args if isinstance(a, torch.Tensor)}


def _value_shaped(packet, args, kwargs) -> bool:
    if packet in VALUE_SHAPED:
        return True
    if packet is aten.where:  # torch.where(cond) = nonzero; the three-argument form is elementwise
        return len(args) == 1
    if packet is aten.repeat_interleave:  # tensor repeats without output_size
        return isinstance(args[1] if len(args) > 1 else args[0], torch.Tensor) and kwargs.get("output_size") is None
    if packet is aten.index:  # reading through a boolean mask
        return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1])
    return False


class _AtenSyncs(TorchDispatchMode):
    def __init__(self, counts: Counter):
        super().__init__()
        self.counts, self.muted = counts, False

    @contextmanager
    def quiet(self):
        """Count nothing inside: a Python-level sync that is counted once as itself."""
        before, self.muted = self.muted, True
        try:
            yield
        finally:
            self.muted = before

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.muted:
            return out
        packet = func.overloadpacket
        if packet in SCALAR_READS:
            self.counts["scalar_read"] += 1
        elif _value_shaped(packet, args, kwargs):
            self.counts["value_shaped"] += 1
        elif packet in COPIES and isinstance(out, torch.Tensor) \
                and any(d != out.device for d in _devices(args[:2])):  # (dst, src) / (src,)
            self.counts["device_copy"] += 1
        return out


@contextmanager
def count_syncs():
    counts: Counter = Counter()
    original_tolist, original_tensor = torch.Tensor.tolist, torch.tensor
    mode = _AtenSyncs(counts)

    @functools.wraps(original_tolist)
    def tolist(self, *args, **kwargs):
        counts["tolist"] += 1
        with mode.quiet():  # its own copy to the host is that one sync
            return original_tolist(self, *args, **kwargs)

    def tensor(data, *args, **kwargs):
        if isinstance(data, torch.Tensor):
            return original_tensor(data, *args, **kwargs)
        counts["tensor_from_python"] += 1
        with mode.quiet():  # its copy to a device is that one sync
            return original_tensor(data, *args, **kwargs)

    torch.Tensor.tolist, torch.tensor = tolist, tensor
    try:
        with mode:
            yield counts
    finally:
        torch.Tensor.tolist, torch.tensor = original_tolist, original_tensor
