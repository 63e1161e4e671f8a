"""Count host-device synchronisation points: every place that reads a tensor's value on the host
(``.item()``, ``.tolist()``, ``float()``, ``int()``, ``bool()``, indexing with a tensor) or builds a tensor
from Python data (a host-to-device copy). On a CPU they are cheap; on a GPU each one stalls the queue, so the
hot path's budget is counted (tests/test_syncs.py, experiments/sync_count.py).

    with count_syncs() as counts:
        generate(...)
    counts  # Counter({'tolist': 31, 'tensor_from_python': 12, ...})
"""
from __future__ import annotations

import functools
from collections import Counter
from contextlib import contextmanager

import torch

READS = ("item", "tolist", "__float__", "__int__", "__bool__", "__index__")


@contextmanager
def count_syncs():
    counts: Counter = Counter()
    originals = {name: getattr(torch.Tensor, name) for name in READS}
    original_tensor = torch.tensor

    def counted(name, fn):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            counts[name.strip("_")] += 1
            return fn(*args, **kwargs)
        return inner

    def tensor(data, *args, **kwargs):
        if not isinstance(data, torch.Tensor):
            counts["tensor_from_python"] += 1
        return original_tensor(data, *args, **kwargs)

    for name, fn in originals.items():
        setattr(torch.Tensor, name, counted(name, fn))
    torch.tensor = tensor
    try:
        yield counts
    finally:
        for name, fn in originals.items():
            setattr(torch.Tensor, name, fn)
        torch.tensor = original_tensor
