"""The attention path of the target and draft LM, chosen by ``attention`` (conf/config.yaml).

On this CPU, torch's scaled_dot_product_attention is slow for ONE query in bfloat16 (results/
attention_paths_cpu.md: 0.45 ms per layer at 1,024 cached tokens, 4x its cost for two queries), so AR
decoding, which scores one token per forward, paid more per token than an SD verify forward of two:
measured on SmolLM2-135M, a 1-token forward cost 32.8 ms at 1,024 cached tokens and a 2-token one 25.1 ms.
That handicapped the AR baseline and inflated SD's speedups at long contexts.

``svbench_cpu`` computes a one-query step as two matmuls with the query heads of each KV head packed
together (no repeat of the cache), softmax in float32, and leaves everything else to transformers' sdpa.
``auto`` = ``svbench_cpu`` for bfloat16/float16 on a CPU, ``sdpa`` otherwise.
"""
from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from svbench.errors import SvbenchError

CHOICES = ("auto", "sdpa", "eager", "svbench_cpu")


def one_query_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None,
                        **kwargs):
    """query (B, H, q, d); key, value (B, kv, L, d). One query on a CPU in low precision: packed matmuls;
    anything else: transformers' sdpa. Returns (B, q, H, d) and no weights, as sdpa_attention_forward."""
    if query.shape[2] != 1 or query.device.type != "cpu" or query.dtype == torch.float32:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    B, H, _, d = query.shape
    kv = key.shape[1]
    q = query.view(B, kv, H // kv, d)  # (B, kv, rep, d): query head h reads KV head h // rep
    # scores = q k^T, computed as (k q^T)^T: the cache rows are a strided view of a larger buffer, and
    # q @ key.transpose(-1, -2) made matmul copy the whole K cache into a contiguous transpose every layer
    # (results/attention_paths_cpu.md: 3.3x slower at 4,000 cached tokens); k q^T reads it in place.
    scores = torch.matmul(key, q.transpose(-1, -2)).transpose(-1, -2)  # (B, kv, L, rep) -> (B, kv, rep, L)
    scores = scores * (scaling if scaling is not None else d ** -0.5)
    if attention_mask is not None:  # (B, 1, 1, L): boolean (True = attend) or additive
        scores = (scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
                  if attention_mask.dtype == torch.bool else scores + attention_mask)
    probs = torch.softmax(scores.float(), dim=-1).to(value.dtype)  # softmax in float32, as eager attention
    out = torch.matmul(probs, value)  # (B, kv, rep, d)
    return out.view(B, H, 1, d).transpose(1, 2).contiguous(), None  # (B, 1, H, d)


AttentionInterface.register("svbench_cpu", one_query_attention)
AttentionMaskInterface.register("svbench_cpu", sdpa_mask)  # masks as sdpa builds them


def attention_for(choice: str, dtype: torch.dtype, device: torch.device) -> str:
    if choice not in CHOICES:
        raise SvbenchError(f"attention={choice!r} must be one of {CHOICES}")
    if choice != "auto":
        return choice
    return "svbench_cpu" if device.type == "cpu" and dtype != torch.float32 else "sdpa"


def set_attention(model, choice: str) -> None:
    """Use the chosen attention path in a transformers model (after its dtype and device are set)."""
    model.set_attn_implementation(attention_for(choice, model.dtype, model.device))
