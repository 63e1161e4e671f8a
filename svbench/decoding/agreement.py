"""Greedy SD against AR, record by record: ``exact``, a near-``tie`` the run's dtype may resolve either way,
or a ``mismatch``. Used by the runner (every greedy record) and experiments/gpu_check.py."""
from __future__ import annotations

import torch

from svbench.decoding.target import TargetRunner

# |logit(AR token) - logit(SD token)| at the first divergence, in float32 from a fresh prefill, below
# which a divergence is a near-tie that the run's dtype may resolve either way (AR scores a position with a
# 1-token forward, SD's verify with a k-token one; both round). bfloat16: the largest error of the top-2 gap
# seen for each (0.47 one token at a time, 0.59 in chunks of 6; 1,152 positions, SmolLM2,
# results/dtype_tie_bound.json from experiments/dtype_tie_bound.py), summed and rounded up. float16: not
# measured, 8x smaller (3 more mantissa bits). float32: kernel-order noise only.
TIE_BOUND = {"float32": 1e-3, "bfloat16": 1.1, "float16": 0.15}


def agreement(reference, prompt_ids: list[int], ar_ids: list[int], ids: list[int], bound: float) -> dict:
    """Where greedy SD output first differs from AR's: position, both tokens and the target's float32 logit
    gap there (``reference``: the target in float32, a fresh prefill of prompt + AR's tokens before it).
    ``agreement`` is ``exact`` (no difference), ``tie`` (|logit(AR) - logit(SD)| <= bound: a near-tie the
    run's dtype may resolve either way) or ``mismatch`` (a real difference: a bug unless the dtype explains it)."""
    if ids == ar_ids:
        return {"agreement": "exact", "divergence": None}
    pos = next((i for i, (a, b) in enumerate(zip(ar_ids, ids)) if a != b), min(len(ar_ids), len(ids)))
    if pos >= min(len(ar_ids), len(ids)):  # one is a prefix of the other: an EOS / length difference
        return {"agreement": "mismatch", "divergence": {"position": pos, "ar_token": None, "token": None,
                                                        "gap": None, "top2_gap": None}}
    with torch.inference_mode():
        logits = TargetRunner(reference).prefill(list(prompt_ids) + ar_ids[:pos])[0].float()  # (V,) next-token
    top2 = logits.topk(2).values
    gap = abs(float(logits[ar_ids[pos]] - logits[ids[pos]]))
    return {"agreement": "tie" if gap <= bound else "mismatch",
            "divergence": {"position": pos, "ar_token": ar_ids[pos], "token": ids[pos], "gap": round(gap, 5),
                           "top2_gap": round(float(top2[0] - top2[1]), 5)}}
