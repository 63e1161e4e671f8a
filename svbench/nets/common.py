"""Pieces shared by the draft networks: causal / tree masks over a cache, attaching frozen target tensors."""
from __future__ import annotations

import torch


def causal_mask(past_len: int, new_len: int, dtype: torch.dtype, device=None) -> torch.Tensor:
    """Additive (1, 1, new, past + new): token i of the new ones sees the cache and new tokens 0..i."""
    allowed = torch.ones(new_len, past_len + new_len, dtype=torch.bool, device=device).tril(past_len)
    return torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill_(~allowed, torch.finfo(dtype).min)[None, None]


def attach_frozen(module: torch.nn.Module, target, vocab_ids: list[int] | None = None) -> None:
    """Give module the target's input embedding and output head (rows vocab_ids only, when given) as
    non-persistent buffers: they follow .to(dtype/device) but are never part of the module's state_dict."""
    embed = target.get_input_embeddings().weight.detach()  # (V, d)
    head = target.get_output_embeddings().weight.detach()  # (V, d)
    if vocab_ids is not None:
        head = head[torch.tensor(vocab_ids, dtype=torch.long, device=head.device)]  # (N, d)
    module.register_buffer("embed_weight", embed, persistent=False)
    module.register_buffer("head_weight", head.contiguous(), persistent=False)
    module.vocab_ids = None if vocab_ids is None else list(vocab_ids)
