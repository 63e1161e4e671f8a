"""svbench.sync_count sees host reads that happen in C++ (a 0-d tensor index, bool() of a comparison), not
only the Python-level ones, and counts nothing for device-side indexing."""
import pytest
import torch

from svbench.sync_count import count_syncs

x = torch.arange(10.0)
t = torch.tensor(3)
SYNCS = {  # one host read or value-shaped result each
    "0-d tensor index": (lambda: x[t], "scalar_read"),
    ".item()": (lambda: x[0].item(), "scalar_read"),
    "int()": (lambda: int(t), "scalar_read"),
    "float()": (lambda: float(x[1]), "scalar_read"),
    "bool() of a comparison": (lambda: bool(t > 1), "scalar_read"),
    "if on a tensor": (lambda: 1 if x.sum() > 0 else 0, "scalar_read"),
    ".tolist()": (lambda: x.tolist(), "tolist"),
    "torch.tensor(list)": (lambda: torch.tensor([1, 2]), "tensor_from_python"),
    "nonzero": (lambda: x.nonzero(), "nonzero"),
    "boolean mask": (lambda: x[x > 4], "boolean_mask"),
}
NO_SYNCS = {  # stay on the device
    "index_select with a (1,) index": lambda: x.index_select(0, t.view(1)),
    "1-d long index": lambda: x[torch.arange(3)],
    "Python int index": lambda: x[3],
    "argmax, topk, cat": lambda: torch.cat([x.argmax().view(1), x.topk(2).indices]),
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


def test_the_counter_restores_what_it_patched():
    tolist, tensor = torch.Tensor.tolist, torch.tensor
    with count_syncs():
        pass
    assert torch.Tensor.tolist is tolist and torch.tensor is tensor
    with count_syncs() as counts:  # no mode left behind: a read after the block is not counted
        pass
    int(t)
    assert dict(counts) == {}
