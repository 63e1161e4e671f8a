"""The target's linear layers, chosen by ``linear`` (conf/config.yaml): ``plain`` (F.linear) or ``onednn``.

``onednn`` runs each bf16 nn.Linear on a CPU through oneDNN with its weight reordered once, at load, into
oneDNN's blocked layout (torch.ops.mkldnn: what torch.compile's freezing does for bf16 linears on a CPU).
F.linear reorders nothing ahead and, on session 25's Xeon (AVX512-BF16), took 1.5x (576 -> 1536) to 2.2x
(the 49,152-row LM head) as long for one row and 1.3x / 2.8x for five (results/onednn_linear_cpu.md).
The output bits are F.linear's (tests/test_linear.py). The reordered copy belongs to the weight it was made
from: a module whose weight was replaced, written in place, cast or copied (``copy.deepcopy``) runs F.linear.
The reordered copies are kept beside the weights (for SmolLM2-135M in bf16, ~270 MB more memory).
"""
from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F
from torch import nn

from svbench.errors import SvbenchError

CHOICES = ("plain", "onednn")
_REORDERED: "weakref.WeakKeyDictionary[nn.Linear, tuple]" = weakref.WeakKeyDictionary()  # module -> (key, weight)


def _weight_key(w: torch.Tensor) -> tuple:
    return w.data_ptr(), w._version, w.dtype, w.device


class OneDNNLinear(nn.Linear):
    """nn.Linear whose forward uses the weight reordered by ``use_linear`` while that weight is unchanged."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        entry = _REORDERED.get(self)
        if entry is None or entry[0] != _weight_key(self.weight) or x.dtype != self.weight.dtype or x.device.type != "cpu":
            return F.linear(x, self.weight, self.bias)
        return torch.ops.mkldnn._linear_pointwise(x, entry[1], self.bias, "none", [], "")


def available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")


def use_linear(model: nn.Module, choice: str) -> int:
    """Put the model's bf16 CPU linear layers on the chosen path (after its dtype and device are set);
    returns how many layers were reordered. For inference only: the reordered weights carry no gradient."""
    if choice not in CHOICES:
        raise SvbenchError(f"linear={choice!r} must be one of {CHOICES}")
    if choice == "plain":
        return 0
    if not available():
        raise SvbenchError("linear=onednn needs a torch built with oneDNN (torch.backends.mkldnn); use linear=plain")
    n = 0
    for module in model.modules():
        w = getattr(module, "weight", None)
        if type(module) in (nn.Linear, OneDNNLinear) and w is not None and w.dtype == torch.bfloat16 \
                and w.device.type == "cpu":
            with torch.no_grad():
                _REORDERED[module] = (_weight_key(w), torch.ops.mkldnn._reorder_linear_weight(w.detach(), 1))
            module.__class__ = OneDNNLinear
            n += 1
    return n
