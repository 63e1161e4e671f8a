"""The attention path of the target and draft LM, chosen by ``attention`` (conf/config.yaml).

On this CPU, torch's scaled_dot_product_attention is slow for ONE query in bfloat16 (results/
attention_paths_cpu.md: 0.45 ms per layer at 1,024 cached tokens, 4x its cost for two queries), so AR
decoding, which scores one token per forward, paid more per token than an SD verify forward of two:
measured on SmolLM2-135M, a 1-token forward cost 32.8 ms at 1,024 cached tokens and a 2-token one 25.1 ms.
That handicapped the AR baseline and inflated SD's speedups at long contexts.

``svbench_cpu`` computes a forward of up to FEW_QUERIES queries (AR's one, a chain verify's few) as two
matmuls with the query heads of each KV head packed together (no repeat of the cache), softmax in float32,
and leaves everything else (prefill, large trees) to ``svbench_sdpa``.

``svbench_sdpa`` is transformers' sdpa without its copy of the cache: for a GQA model, several queries and a
mask (every verify forward of a tree or chain), transformers repeats each layer's whole K and V to every query
head before calling sdpa (CUDA's ``enable_gqa`` refuses a mask), a copy of the cache per layer per round.
svbench_sdpa folds the query heads of each KV head into its rows instead, (B, kv, rep*Tq, d), repeats the
mask's rows to match (one small (rep*Tq, L) mask per forward, shared by its layers) and reads K/V in place.
``auto`` = ``svbench_cpu`` for bfloat16/float16 on a CPU, ``svbench_sdpa`` otherwise.
"""
from __future__ import annotations

import math

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from svbench.errors import SvbenchError

CHOICES = ("auto", "sdpa", "eager", "svbench_cpu", "svbench_sdpa")


FEW_QUERIES = 8  # up to this many queries per forward (AR's 1, a verify's few) take the packed path


def visible_prefix(attention_mask: torch.Tensor, L: int) -> int:
    """The number c of leading key columns that every query may attend under a (B|1, 1, Tq, >=L) mask,
    boolean (True = attend) or additive (0 = attend): in svbench's forwards the cached prefix, so the
    masked ops touch only the last L - c columns. Computed once per mask (a forward's layers share it) and
    kept on the tensor with its version, so a mask written in place is read again (inference-mode tensors
    have no version: a mask made under inference_mode, as in every svbench forward, is read once)."""
    now = -2 if attention_mask.is_inference() else attention_mask._version
    version, length, c = getattr(attention_mask, "_svbench_visible_prefix", (-1, -1, 0))
    if (version, length) != (now, L):  # new, written to since, or another length
        m = attention_mask[..., :L]
        blocked = (~m if m.dtype == torch.bool else m != 0).flatten(0, -2).any(0)  # (L,) any query blocked
        c = int(torch.cat([blocked, blocked.new_ones(1)]).to(torch.uint8).argmax())  # the first such column, else L
        attention_mask._svbench_visible_prefix = (now, L, c)
    return c


def folded_mask(attention_mask: torch.Tensor, rep: int) -> torch.Tensor:
    """(B|1, 1, Tq, L) -> (B|1, 1, rep*Tq, L): row r*Tq + t is row t, for queries folded as grouped_sdpa folds
    them. Built once per mask (the forward's layers share it), cached on the tensor as visible_prefix is (a mask
    made under inference_mode has no version: folded once, so it must not be written in place afterwards)."""
    now = -2 if attention_mask.is_inference() else attention_mask._version
    version, groups, folded = getattr(attention_mask, "_svbench_folded", (-1, 0, None))
    if (version, groups) != (now, rep):
        folded = attention_mask.repeat(1, 1, rep, 1)  # (B|1, 1, rep*Tq, L)
        attention_mask._svbench_folded = (now, rep, folded)
    return folded


def unfold_heads(out: torch.Tensor, rep: int, Tq: int) -> torch.Tensor:
    """(B, kv, rep*Tq, d), query heads folded into their KV head's rows -> (B, Tq, H, d), H = kv*rep, head
    h = k*rep + r. Works on any strides (CUDA's memory-efficient sdpa returns a non-contiguous output)."""
    B, kv, _, d = out.shape
    out = out.unflatten(2, (rep, Tq))  # (B, kv, rep, Tq, d)
    return out.permute(0, 3, 1, 2, 4).reshape(B, Tq, kv * rep, d)  # (B, Tq, H, d)


def grouped_sdpa(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
    """query (B, H, Tq, d); key, value (B, kv, L, d). With GQA, Tq > 1 and a mask: sdpa over the query heads
    folded into their KV head's rows, the cache read in place; otherwise (no mask: sdpa's own GQA; one query:
    transformers packs it) transformers' sdpa. Returns (B, Tq, H, d) and no weights, as sdpa_attention_forward."""
    rep, Tq = getattr(module, "num_key_value_groups", 1), query.shape[2]
    foldable = attention_mask is not None and attention_mask.dim() == 4 and attention_mask.shape[1] == 1 \
        and attention_mask.shape[-2] == Tq  # (B|1, 1, Tq, L): one mask for every head
    extras = any(kwargs.get(k) is not None for k in ("position_bias", "softcap", "s_aux"))
    if rep == 1 or Tq == 1 or not foldable or extras:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    B, _, _, d = query.shape
    q = query.reshape(B, key.shape[1], rep * Tq, d)  # (B, kv, rep*Tq, d): query head h reads KV head h // rep
    out = torch.nn.functional.scaled_dot_product_attention(q, key, value, attn_mask=folded_mask(attention_mask, rep),
                                                           dropout_p=dropout, scale=scaling)  # (B, kv, rep*Tq, d)
    return unfold_heads(out, rep, Tq), None


def few_query_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None,
                        **kwargs):
    """query (B, H, q, d); key, value (B, kv, L, d). Up to FEW_QUERIES queries on a CPU in low precision:
    packed matmuls; anything else: transformers' sdpa. Returns (B, q, H, d) and no weights, as
    sdpa_attention_forward. The numbers equal eager attention's order of operations (q k^T, scale, mask,
    softmax in float32; tests/test_attention.py checks the bits); the scale goes on q when it is a power of
    two, and the mask touches only the columns some query may not see (the scale and the mask used to make
    two more passes over all (rep*q, L) scores)."""
    Tq = query.shape[2]
    if Tq > FEW_QUERIES or query.device.type != "cpu" or query.dtype == torch.float32:
        return grouped_sdpa(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                            is_causal=is_causal, **kwargs)
    B, H, _, d = query.shape
    kv, L = key.shape[1], key.shape[2]
    rep = H // kv
    scale = scaling if scaling is not None else d ** -0.5
    exact = math.frexp(scale)[0] == 0.5  # a power of two: scaling q first gives the same bits as scaling q k^T
    q = (query * scale if exact else query).reshape(B, kv, rep * Tq, d)  # query head h reads KV head h // rep
    # scores = q k^T, computed as (k q^T)^T: the cache rows are a strided view of a larger buffer, and
    # q @ key.transpose(-1, -2) made matmul copy the whole K cache into a contiguous transpose every layer
    # (results/one_query_attention_cpu.md: 2.1x slower at 4,096 cached tokens); k q^T reads it in place.
    # (Tried: one 2-D matmul per KV head, k q^T or q k^T, into preallocated scores: the same bits, faster
    # on warm caches, but 5-14% slower per forward at 2,048-7,900 cached tokens in an interleaved A/B.)
    scores = torch.matmul(key, q.transpose(-1, -2)).transpose(-1, -2)  # (B, kv, L, rep*Tq) -> (B, kv, rep*Tq, L)
    scores = scores.reshape(B, kv, rep, Tq, L)  # (B, kv, rep, Tq, L)
    if not exact:
        scores = scores * scale
    if attention_mask is None and Tq > 1:  # no mask given for several queries: causal, the queries are the last Tq
        c = L - Tq + 1
        tail = torch.ones(Tq, Tq - 1, dtype=torch.bool, device=query.device).tril(-1)  # (Tq, L - c)
        scores[..., c:].masked_fill_(~tail, torch.finfo(scores.dtype).min)
    elif attention_mask is not None:  # (B|1, 1, Tq, L): boolean (True = attend) or additive
        c = visible_prefix(attention_mask, L)
        if c < L:
            m = attention_mask[:, :, :, c:L].unsqueeze(2)  # (B|1, 1, 1, Tq, L - c)
            if m.dtype == torch.bool:
                scores[..., c:].masked_fill_(~m, torch.finfo(scores.dtype).min)
            else:
                scores[..., c:] += m
    probs = torch.softmax(scores.float(), dim=-1).to(value.dtype)  # softmax in float32, as eager attention
    out = torch.matmul(probs.reshape(B, kv, rep * Tq, L), value)  # (B, kv, rep*Tq, d)
    return unfold_heads(out, rep, Tq), None


AttentionInterface.register("svbench_cpu", few_query_attention)
AttentionMaskInterface.register("svbench_cpu", sdpa_mask)  # masks as sdpa builds them
GROUPED_SDPA = "svbench_sdpa"  # also the draft nets' own attention (EAGLE heads, GliDe's self-attention)
AttentionInterface.register(GROUPED_SDPA, grouped_sdpa)
AttentionMaskInterface.register(GROUPED_SDPA, sdpa_mask)


def attention_for(choice: str, dtype: torch.dtype, device: torch.device) -> str:
    if choice not in CHOICES:
        raise SvbenchError(f"attention={choice!r} must be one of {CHOICES}")
    if choice != "auto":
        return choice
    return "svbench_cpu" if device.type == "cpu" and dtype != torch.float32 else GROUPED_SDPA


def set_attention(model, choice: str) -> None:
    """Use the chosen attention path in a transformers model (after its dtype and device are set)."""
    model.set_attn_implementation(attention_for(choice, model.dtype, model.device))
