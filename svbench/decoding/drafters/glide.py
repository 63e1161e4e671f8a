"""GliDe (ALGORITHMS.md §3): the draft reads the target's KV cache of the verified prefix.

Same drafting loop as vanilla SD (chain, or a CaPE tree with ``cape_bins``); only the forward differs:
each draft layer also cross-attends to one target layer's cached K/V. The draft's own cache is rolled
back lazily to the verified prefix (DraftModelDrafter._catch_up); at drafting time the target cache
holds exactly the verified tokens (TargetRunner's invariant). The root and drafted tokens see all of it;
tokens fed at verified positions (the prompt at the first round, accepted tokens) see only the target keys
before their own position (svbench.nets.glide.keys_before), as training's stale-cache mask shows them.
``mask_context=false`` lets them see the whole verified cache, as the official inference code does (a
deviation for svbench's own drafts, which never saw their own or later target keys in training).

``reencode_accepted`` (method.drafter.reencode_accepted): false keeps the draft's K/V of the accepted
tokens as they were computed while drafting (against the target cache of the round before); true rolls
the draft cache back to before the old root and re-encodes the old root and the accepted tokens against
the fresh target cache every round, as ALGORITHMS.md §3 and the official code do. For a 1-layer draft
both give the same self-attention K/V (its K/V depend only on the token and position); from 2 layers
on, the upper layers' K/V differ. The cost is one draft forward over 1 + accepted tokens per round.
"""
from __future__ import annotations

import torch

from svbench.decoding.drafters.draft_model import DraftModelDrafter
from svbench.models import load_target_reader
from svbench.nets.common import causal_mask
from svbench.nets.glide import glide_from_target, keys_before, load_glide


def load_glide_network(spec, target):
    """The pair's ``glide`` entry: fresh (``num_layers``, initialised from the target), or a folder."""
    return load_target_reader(spec, target, "glide", lambda t, s: glide_from_target(t, int(s.get("num_layers", 1))),
                              load_glide)


class GlideDrafter(DraftModelDrafter):
    network = "glide"
    load_network = staticmethod(load_glide_network)

    def __init__(self, glide_draft, cape_bins=None, reencode_accepted: bool = False, mask_context: bool = True):
        super().__init__(glide_draft, None, cape_bins)
        self.reencode_accepted, self.mask_context = bool(reencode_accepted), bool(mask_context)
        if glide_draft.vocab_ids is not None:  # the net's head already has the subset's rows: ids only
            self.vocab_ids = torch.tensor(glide_draft.vocab_ids, device=glide_draft.head_weight.device)

    @classmethod
    def from_pair(cls, pair, cape_bins=None, reencode_accepted: bool = False,
                  mask_context: bool = True) -> "GlideDrafter":
        return cls(pair.network, cape_bins, reencode_accepted, mask_context)

    def _kept_prefix(self, ids: list[int], limit: int) -> int:
        if self.reencode_accepted:  # roll back to before the old root: it and the accepted tokens are re-encoded
            return min(max(0, self._round_start - 1), limit)
        return super()._kept_prefix(ids, limit)

    def _forward(self, input_ids: torch.Tensor, new_ids: list[int]) -> torch.Tensor:
        """input_ids (1, n) on the device; new_ids the same tokens on the host."""
        device = input_ids.device
        past, n = len(self.cached_ids), len(new_ids)
        positions = torch.arange(past, past + n, device=device)[None]  # (1, n) absolute positions
        verified = self.target.cached_len  # the target cache holds exactly the verified prefix now
        target_kv = [(self.target.cache.layers[j].keys[:, :, :verified], self.target.cache.layers[j].values[:, :, :verified])
                     for j in self.model.target_layers()]  # per draft layer: (1, kv_T, P, hd_T) each
        dtype = self.model.model.norm.weight.dtype
        mask = causal_mask(past, n, dtype, device) if n > 1 else None  # (1, 1, n, past + n); one query sees all
        # tokens fed at verified positions (the context, accepted tokens) see only the target keys before them,
        # as in training; the root and drafted tokens (positions >= verified) see the whole verified cache
        cross = keys_before(positions, verified, dtype) if self.mask_context and past < verified else None
        hidden = self.model(input_ids, positions, target_kv, self_mask=mask, cross_mask=cross,
                            cache=self.cache)  # (1, n, d)
        self.cached_ids.extend(new_ids)
        return self.model.logits(hidden[0, -1])  # (V,) or (N,)
