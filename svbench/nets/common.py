"""Pieces shared by the draft networks: causal / tree masks over a cache, the draft vocabulary's (V,) membership,
attaching frozen target tensors."""
from __future__ import annotations

import torch

from svbench.draft_folder import read_vocab_subset, write_draft_folder
from svbench.errors import SvbenchError


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype, prefix_len: int = 0) -> torch.Tensor:
    """Additive (1, 1, Q, prefix_len + K) from a boolean (Q, K) [query, key] `allowed`, on its device: 0 on the
    prefix_len keys before (visible to every query) and where allowed, dtype-min elsewhere."""
    Q, K = allowed.shape
    mask = torch.zeros(Q, prefix_len + K, dtype=dtype, device=allowed.device)
    mask[:, prefix_len:].masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[None, None]  # (1, 1, Q, prefix_len + K)


def causal_mask(past_len: int, new_len: int, dtype: torch.dtype, device=None) -> torch.Tensor:
    """Additive (1, 1, new, past + new): token i of the new ones sees the cache and new tokens 0..i."""
    return additive_mask(torch.ones(new_len, new_len, dtype=torch.bool, device=device).tril(), dtype, past_len)


def vocab_mask(vocab_size: int, ids) -> torch.Tensor:
    """(V,) bool, True on the target ids of a draft vocabulary (ids: a list or a 1-D tensor of target ids)."""
    return torch.zeros(vocab_size, dtype=torch.bool).index_fill_(0, torch.as_tensor(ids, dtype=torch.long), True)


def vocab_rows(weight: torch.Tensor, ids) -> torch.Tensor:
    """(V, d) -> (N, d): the rows of a reduced drafting vocabulary (ids: its target ids, a list or a 1-D tensor),
    in the ids' order; ids None: weight itself (the whole vocabulary)."""
    if ids is None:
        return weight
    return weight.index_select(0, torch.as_tensor(ids, dtype=torch.long, device=weight.device))


def attach_frozen(module: torch.nn.Module, target, vocab_ids: list[int] | None = None) -> None:
    """Give module the target's input embedding and output head (rows vocab_ids only, when given) as
    non-persistent buffers: they follow .to(dtype/device) but are never part of the module's state_dict."""
    embed = target.get_input_embeddings().weight.detach()  # (V, d)
    head = target.get_output_embeddings().weight.detach()  # (V, d)
    head = vocab_rows(head, vocab_ids)  # (N, d)
    module.register_buffer("embed_weight", embed, persistent=False)
    module.register_buffer("head_weight", head.contiguous(), persistent=False)
    module.vocab_ids = None if vocab_ids is None else list(vocab_ids)


def save_net(module: torch.nn.Module, folder, config: dict, fmt: str) -> None:
    """config.json (+ svbench_format), the module's own weights and its drafting vocabulary: svbench.draft_folder."""
    write_draft_folder(folder, {**config, "svbench_format": fmt}, module.state_dict(), fmt, module.vocab_ids)


def load_weights(module: torch.nn.Module, state: dict, folder, target, use_vocab_subset: bool, what: str):
    """Load a draft net's own weights (exactly its tensors, no more, no fewer), then attach the target's
    embedding and head over the folder's drafting vocabulary (vocab_subset.json) unless told not to."""
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise SvbenchError(f"{what} {folder}: missing tensors {missing[:4]}, unexpected {unexpected[:4]}")
    vocab_ids = read_vocab_subset(folder) if use_vocab_subset else None
    attach_frozen(module, target, vocab_ids)
    return vocab_ids
