"""The linear layers of the target and the draft network, chosen by ``linear`` (conf/config.yaml): ``plain``
(F.linear) or ``onednn``.

``onednn`` runs each bf16 nn.Linear on a CPU through oneDNN with its weight reordered once, at load, into
oneDNN's blocked layout (torch.ops.mkldnn: what torch.compile's freezing does for bf16 linears on a CPU).
F.linear reorders nothing ahead and, on session 25's Xeon (AVX512-BF16), took 1.5x (576 -> 1536) to 2.2x
(the 49,152-row LM head) as long for one row and 1.3x / 2.8x for five (results/onednn_linear_cpu.md).
The output bits are F.linear's (tests/test_linear.py). The reordered copy belongs to the weight it was made
from: a module whose weight was replaced, cast, copied (``copy.deepcopy``) or written in place through the
tensor itself runs F.linear. A write through ``weight.data`` bypasses the version counter and is NOT detected:
call ``use_linear`` again after changing weights that way.
Only nn.Linear modules are reordered: the drafters' reduced-vocabulary heads (``hidden @ head.T`` over a slice
of the LM head) stay plain matmuls, and a draft LM's full LM head is reordered even when a reduced vocabulary
leaves it unused. The reordered copies are kept beside the weights (for SmolLM2-135M in bf16, ~270 MB more
memory for the target, ~70 MB for the 2-layer draft LM with its LM head, less for the heads).
"""
from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F
from torch import nn

from svbench.environment import cpu_bf16_native
from svbench.errors import SvbenchError

CHOICES = ("plain", "onednn")
# module -> (_weight_key of its weight, the reordered weight, a weak reference to the weight it was made from)
_REORDERED: "weakref.WeakKeyDictionary[nn.Linear, tuple]" = weakref.WeakKeyDictionary()


def _weight_key(w: torch.Tensor) -> tuple:
    """What must be unchanged in w for its reordered copy to stand for it (besides being the same tensor
    object, checked through a weak reference): its in-place write count, its storage and its dtype."""
    return w._version, w.data_ptr(), w.dtype


class OneDNNLinear(nn.Linear):
    """nn.Linear whose forward uses the weight reordered by ``use_linear`` while that weight is unchanged."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        entry, w = _REORDERED.get(self), self.weight
        if entry is None or entry[2]() is not w or entry[0] != _weight_key(w) or x.dtype != w.dtype \
                or x.device.type != "cpu":
            return F.linear(x, w, self.bias)
        return torch.ops.mkldnn._linear_pointwise(x, entry[1], self.bias, "none", [], "")


def available() -> bool:
    """oneDNN is built in, has the two ops, and supports bf16 on this CPU (the check torch.compile makes)."""
    ops = torch.ops.mkldnn
    return hasattr(ops, "_reorder_linear_weight") and hasattr(ops, "_linear_pointwise") and cpu_bf16_native()


def use_linear(model: nn.Module, choice: str) -> int:
    """Put the model's bf16 CPU nn.Linear layers on the chosen path (after its dtype and device are set);
    returns how many were reordered. For inference only: the reordered weights carry no gradient."""
    if choice not in CHOICES:
        raise SvbenchError(f"linear={choice!r} must be one of {CHOICES}")
    if choice == "plain":
        return 0
    if not available():
        raise SvbenchError("linear=onednn needs a torch with oneDNN and bf16 support on this CPU; use linear=plain")
    n = 0
    for module in model.modules():
        w = getattr(module, "weight", None)
        if type(module) in (nn.Linear, OneDNNLinear) and w is not None and w.dtype == torch.bfloat16 \
                and w.device.type == "cpu" and not w.is_inference():  # inference tensors have no version
            with torch.no_grad():
                packed = torch.ops.mkldnn._reorder_linear_weight(w.detach(), 1)
            _REORDERED[module] = (_weight_key(w), packed, weakref.ref(w))
            module.__class__ = OneDNNLinear
            n += 1
    if n == 0:
        raise SvbenchError("linear=onednn: the model has no bfloat16 linear layer on the CPU to reorder "
                           "(it needs dtype=bfloat16 device=cpu); use linear=plain")
    return n
