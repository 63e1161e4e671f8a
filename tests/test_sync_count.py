"""svbench.sync_count sees host reads that happen in C++ (a 0-d tensor index, bool() of a comparison), not
only the Python-level ones, and counts nothing for device-side indexing."""
import contextlib

import pytest
import torch

from svbench.sync_count import count_syncs

x = torch.arange(10.0)
t = torch.tensor(3)
repeats = torch.tensor([1, 2, 3])
SYNCS = {  # one host read or value-shaped result each
    "0-d tensor index": (lambda: x[t], "scalar_read"),
    ".item()": (lambda: x[0].item(), "scalar_read"),
    "int()": (lambda: int(t), "scalar_read"),
    "float()": (lambda: float(x[1]), "scalar_read"),
    "bool() of a comparison": (lambda: bool(t > 1), "scalar_read"),
    "if on a tensor": (lambda: 1 if x.sum() > 0 else 0, "scalar_read"),
    ".tolist()": (lambda: x.tolist(), "tolist"),
    "torch.tensor(list)": (lambda: torch.tensor([1, 2]), "tensor_from_python"),
    "torch.equal": (lambda: torch.equal(x, x), "scalar_read"),
    "nonzero": (lambda: x.nonzero(), "value_shaped"),
    "one-argument where": (lambda: torch.where(x > 4), "value_shaped"),
    "argwhere": (lambda: torch.argwhere(x > 4), "value_shaped"),
    "unique": (lambda: torch.unique(x), "value_shaped"),
    "repeat_interleave by a tensor": (lambda: x[:3].repeat_interleave(repeats), "value_shaped"),
    "boolean mask": (lambda: x[x > 4], "value_shaped"),
    ".to(another device)": (lambda: x.to("meta"), "device_copy"),
    "copy_ from another device": (lambda: torch.empty(10, device="meta").copy_(x), "device_copy"),
}
NO_SYNCS = {  # stay on the device
    "index_select with a (1,) index": lambda: x.index_select(0, t.view(1)),
    "1-d long index": lambda: x[torch.arange(3)],
    "Python int index": lambda: x[3],
    "argmax, topk, cat": lambda: torch.cat([x.argmax().view(1), x.topk(2).indices]),
    "three-argument where": lambda: torch.where(x > 4, x, 0.0),
    "repeat_interleave by an int": lambda: x.repeat_interleave(2),
    ".to(dtype) on the same device": lambda: x.to(torch.float16),
}


@pytest.mark.parametrize("grad_mode", [torch.no_grad, torch.inference_mode])
@pytest.mark.parametrize("name", sorted(SYNCS))
def test_each_host_read_is_counted_once(name, grad_mode):
    fn, kind = SYNCS[name]
    with grad_mode(), count_syncs() as counts:
        fn()
    assert dict(counts) == {kind: 1}


@pytest.mark.parametrize("grad_mode", [torch.no_grad, torch.inference_mode])
@pytest.mark.parametrize("name", sorted(NO_SYNCS))
def test_device_side_indexing_is_not_counted(name, grad_mode):
    with grad_mode(), count_syncs() as counts:
        NO_SYNCS[name]()
    assert dict(counts) == {}


def test_python_level_syncs_are_counted_by_their_wrappers_once_each():
    """(On a GPU their own copies also reach aten ops; the wrappers mute the mode meanwhile. This CPU cannot
    show that: here neither reaches a copy.)"""
    with count_syncs() as counts:
        x.tolist()
        torch.tensor([1, 2], device="meta")
    assert dict(counts) == {"tolist": 1, "tensor_from_python": 1}


def test_nested_counters_both_count():
    with count_syncs() as outer:
        int(t)
        with count_syncs() as inner:
            int(t)
            x.tolist()
    assert dict(outer) == {"scalar_read": 2, "tolist": 1} and dict(inner) == {"scalar_read": 1, "tolist": 1}


@pytest.mark.parametrize("fails", [False, True])
def test_the_counter_restores_what_it_patched(fails):
    from torch.utils._python_dispatch import _get_current_dispatch_mode_stack

    tolist, tensor = torch.Tensor.tolist, torch.tensor
    with pytest.raises(RuntimeError) if fails else contextlib.nullcontext():
        with count_syncs() as counts:
            if fails:
                raise RuntimeError("inside")
    assert torch.Tensor.tolist is tolist and torch.tensor is tensor
    assert _get_current_dispatch_mode_stack() == []  # no mode left behind: a read after the block is not counted
    int(t)
    assert dict(counts) == {}
