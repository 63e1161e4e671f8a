"""Vanilla SD: a separate, smaller causal LM drafts a chain token by token (ALGORITHMS.md §2)."""
from __future__ import annotations

import torch
from transformers import DynamicCache

from svbench.decoding.tree import DraftTree
from svbench.decoding.verify import Sampling, warp


class DraftModelDrafter:
    def __init__(self, draft_model):
        self.model = draft_model
        self.reset()

    @classmethod
    def from_pair(cls, pair) -> "DraftModelDrafter":
        return cls(pair.draft)

    def reset(self) -> None:
        self.cache = DynamicCache(config=self.model.config)
        self.cached_ids: list[int] = []  # the tokens whose K/V the draft cache holds, in order
        self._round_start = 0  # len(ids) at the previous round: ids[:that] is known to be in the cache

    def _forward(self, new_ids: list[int]) -> torch.Tensor:
        input_ids = torch.tensor([new_ids], device=self.model.device)  # (1, t)
        out = self.model(input_ids=input_ids, cache=self.cache, use_cache=True, logits_to_keep=1)
        self.cached_ids.extend(new_ids)
        return out.logits[0, -1]  # (V,)

    def _catch_up(self, ids: list[int]) -> torch.Tensor:
        """Roll the draft cache back to its longest prefix shared with ids, feed the rest, return the
        next-token logits. Only the tail since the last round can differ (ids only ever grows)."""
        limit = min(len(self.cached_ids), len(ids) - 1)  # always re-feed at least the root
        common = min(max(0, self._round_start - 1), limit)
        while common < limit and self.cached_ids[common] == ids[common]:
            common += 1
        stale = len(self.cached_ids) - common
        if stale:
            self.cache.crop(-stale)
            del self.cached_ids[common:]
        return self._forward(ids[common:])

    def get_candidates(self, ids, policy, max_len, sampling: Sampling, generator=None) -> DraftTree:
        if max_len <= 0:
            return DraftTree.chain(ids[-1], [])
        logits = self._catch_up(ids)
        self._round_start = len(ids)
        drafted, draft_probs, draft_entropy = [], [], []
        while True:
            log_q = torch.log_softmax(logits.float(), dim=-1)  # raw draft distribution, T = 1
            entropy = float(-(log_q.exp() * log_q).sum())  # H_t = -sum_v q(v) ln q(v)
            if sampling.greedy:
                token = int(log_q.argmax())
            else:
                q = warp(logits, sampling)  # same warping as the target's p
                token = int(torch.multinomial(q, 1, generator=generator))
                draft_probs.append(q)
            drafted.append(token)
            draft_entropy.append(entropy)
            if len(drafted) >= max_len or policy.should_stop(len(drafted), float(log_q[token].exp()), entropy):
                break
            logits = self._forward([token])
        probs = None
        if draft_probs:  # row 0 (the root) is never a sampled node
            probs = torch.cat([torch.zeros_like(draft_probs[0])[None], torch.stack(draft_probs)])  # (n, V)
        return DraftTree.chain(ids[-1], drafted, probs, draft_entropy)

    def update_candidate_strategy(self, tree: DraftTree, accepted_path: list[int]) -> None:
        pass  # the cache is rolled back lazily by _catch_up at the next round
