"""Vanilla SD: a separate, smaller causal LM drafts a chain token by token (ALGORITHMS.md §2).

Reduced vocabulary (optional, ``vocab_ids``): the draft's head is evaluated only on those rows, so it
never proposes another token; under sampling q is 0 outside the subset, which keeps verification exact.

CaPE (optional, ``cape_bins``, ALGORITHMS.md §4): the chain becomes the greedy spine of a tree; at step i
the top-k_i tokens of q_i, k_i = bins[floor(10 * top1_prob)], hang off the spine's previous node (the
spine token is the first of them). All candidates are deterministic, so sampling verification uses the
deterministic-siblings rule. The length policy stops the spine (svbench's choice: no official code).
"""
from __future__ import annotations

import torch

from svbench.decoding.kv_cache import StaticKVCache
from svbench.decoding.tree import DraftTree
from svbench.decoding.verify import Sampling, entropy as entropy_of, sample_rows, warp
from svbench.models import load_draft_lm
from svbench.nets.common import vocab_rows


OFFICIAL_CAPE_BINS = (8, 8, 8, 6, 6, 6, 4, 4, 2, 2, 2, 2)


def cape_width(bins, top1_prob: float) -> int:
    """k_i = bins[floor(10 * m_i)]: how many candidates (spine token included) to keep at this step."""
    return int(bins[min(int(10 * top1_prob), len(bins) - 1)])


class DraftModelDrafter:
    network = "draft"            # the pair entry: a causal LM (svbench.models.load_draft_lm)
    draft_distribution = True
    load_network = staticmethod(load_draft_lm)

    def __init__(self, draft_model, vocab_ids: list[int] | None = None, cape_bins=None):
        self.model = draft_model
        self.device = next(draft_model.parameters()).device
        self.cape_bins = None if cape_bins is None else [int(k) for k in cape_bins]
        self.vocab_ids = None
        if vocab_ids is not None:  # (N,) token ids and the matching rows of the head
            self.vocab_ids = torch.tensor(vocab_ids, dtype=torch.long, device=draft_model.device)
            self.head = vocab_rows(draft_model.lm_head.weight.detach(), self.vocab_ids)  # (N, d)
        self.reset()

    @classmethod
    def from_pair(cls, pair, reduced_vocab: bool = True, cape_bins=None) -> "DraftModelDrafter":
        return cls(pair.network, pair.vocab_subset if reduced_vocab else None, cape_bins)

    def reset(self, target=None) -> None:
        self.target = target  # the TargetRunner (GliDe reads its K/V; vanilla SD ignores it)
        self.cache = StaticKVCache(self.model.config.num_hidden_layers)
        self.cached_ids: list[int] = []  # the tokens whose K/V the draft cache holds, in order
        self._round_start = 0  # len(ids) at the previous round: ids[:that] is known to be in the cache

    def _forward(self, input_ids: torch.Tensor, new_ids: list[int]) -> torch.Tensor:
        """Feed input_ids (1, t) on the device (new_ids: the same tokens on the host); return the next-token
        logits over the drafting vocabulary: (V,) or (N,)."""
        self.cached_ids.extend(new_ids)
        if self.vocab_ids is None:
            return self.model(input_ids=input_ids, cache=self.cache, use_cache=True, logits_to_keep=1).logits[0, -1]
        hidden = self.model.model(input_ids=input_ids, cache=self.cache, use_cache=True).last_hidden_state
        return hidden[0, -1] @ self.head.T  # (N,)

    def _catch_up(self, ids: list[int]) -> torch.Tensor:
        """Roll the draft cache back to its longest prefix shared with ids, feed the rest, return the
        next-token logits. Only the tail since the last round can differ (ids only ever grows)."""
        common = self._kept_prefix(ids, min(len(self.cached_ids), len(ids) - 1))  # always re-feed the root
        stale = len(self.cached_ids) - common
        if stale:
            self.cache.crop(-stale)
            del self.cached_ids[common:]
        return self._forward(torch.tensor([ids[common:]], device=self.device), ids[common:])  # (1, t)

    def _kept_prefix(self, ids: list[int], limit: int) -> int:
        """How many cached draft positions (at most limit) stay: those before the last round's root, and the
        drafted tokens that the target accepted (equal to ids)."""
        common = min(max(0, self._round_start - 1), limit)
        while common < limit and self.cached_ids[common] == ids[common]:
            common += 1
        return common

    def get_candidates(self, ids, policy, max_len, sampling: Sampling, generator=None) -> DraftTree:
        if max_len <= 0:
            return DraftTree.chain(ids[-1], [])
        logits = self._catch_up(ids)
        self._round_start = len(ids)
        planned = policy.planned_steps(max_len)  # known up front (fixed, heuristic): one host read per round
        rows, on_device, draft_probs = [], [], []  # rows: per step [H_t, q(y_t), y_t, top-k ids...] on the host
        while True:  # one draft step
            log_q = torch.log_softmax(logits.float(), dim=-1)  # raw draft distribution, T = 1: (V,) or (N,)
            entropy = entropy_of(log_q)  # H_t = -sum_v q(v) ln q(v)
            if self.cape_bins:  # the CaPE spine is greedy under sampling too: the first of the top-k
                top = log_q.topk(min(max(self.cape_bins), log_q.shape[-1])).indices  # (k_max,), ties as topk breaks them
                index = top[0]
            elif sampling.greedy:
                index = log_q.argmax()
            else:
                q = warp(logits, sampling)  # same warping as the target's p
                index = sample_rows(q[None], generator)[0]
                draft_probs.append(q)
            index = index.view(1)  # (1,): a 0-d tensor index would read its value on the host
            token_on_device = self.token_id(index)  # (1,) y_t
            parts = [entropy, log_q.index_select(0, index).exp(), token_on_device]  # H_t, q(y_t), y_t
            if self.cape_bins:  # top-k_i of q_i (k_i known once q(y_t) is): the largest k, cut on the host
                parts.append(self.token_id(top))
            row = torch.cat([p.double().reshape(-1) for p in parts])  # (3,) or (3 + k_max,)
            if planned is None:  # the policy decides from H_t and q(y_t): ONE device->host transfer per step
                rows.append(row.tolist())
                fed = [int(rows[-1][2])]
                if len(rows) >= max_len or policy.should_stop(len(rows), rows[-1][1], rows[-1][0]):
                    break
            else:  # the length is known: the rows stay on the device until the chain is drafted
                on_device.append(row)
                fed = [-1]  # a placeholder in cached_ids: the host learns the token with the last step (below)
                if len(on_device) >= planned:
                    break
            logits = self._forward(token_on_device.view(1, 1), fed)  # the token stays on the device
        if on_device:
            rows = torch.stack(on_device).tolist()  # ONE device->host transfer for the whole chain
            if len(rows) > 1:  # every drafted token but the last was fed: fill in their placeholders
                self.cached_ids[1 - len(rows):] = [int(row[2]) for row in rows[:-1]]
        drafted, draft_entropy = [int(row[2]) for row in rows], [row[0] for row in rows]
        if self.cape_bins:  # the first of the top-k is the spine token itself
            siblings = [[int(t) for t in row[4: 3 + cape_width(self.cape_bins, row[1])]] for row in rows]
            return cape_tree(ids[-1], drafted, siblings, draft_entropy)
        return DraftTree.chain(ids[-1], drafted, self._full_vocab(draft_probs), draft_entropy)

    def token_id(self, index: torch.Tensor) -> torch.Tensor:
        """Drafting-vocabulary indices (1-d tensor) -> token ids (1-d tensor), on the device."""
        return index if self.vocab_ids is None else self.vocab_ids.index_select(0, index)

    @torch.inference_mode()
    def sequence_logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Teacher-forced next-token logits over the drafting vocabulary at every position of input_ids (1, T),
        without the drafter's cache (for analysis): (T, V) or (T, N); token_id maps an index to its token."""
        hidden = self.model.model(input_ids=input_ids).last_hidden_state[0]  # (T, d)
        return hidden @ (self.model.lm_head.weight if self.vocab_ids is None else self.head).T

    def _full_vocab(self, draft_probs: list[torch.Tensor]) -> torch.Tensor | None:
        """(n, V) rows of q over the full vocabulary; row 0 (the root) is never a sampled node."""
        if not draft_probs:
            return None
        q = torch.stack(draft_probs)  # (k, V) or (k, N)
        if self.vocab_ids is not None:
            full = torch.zeros(q.shape[0], self.model.config.vocab_size, dtype=q.dtype, device=q.device)
            q = full.index_copy_(1, self.vocab_ids, q)  # q = 0 outside the subset
        return torch.cat([torch.zeros_like(q[:1]), q])

    def update_candidate_strategy(self, tree: DraftTree, accepted_path: list[int]) -> None:
        pass  # the cache is rolled back lazily by _catch_up at the next round


def cape_tree(root: int, spine: list[int], siblings: list[list[int]], draft_entropy) -> DraftTree:
    """Spine y_1..y_k plus, at step i, leaves y_1..y_{i-1} + [v] for the other top-k_i tokens v.
    Node order: per step the spine node, then its siblings, so parents precede children."""
    tokens, parents, depths, previous = [root], [-1], [0], 0
    for depth, (spine_token, leaves) in enumerate(zip(spine, siblings), start=1):
        tokens.append(spine_token)
        parents.append(previous)
        here = len(tokens) - 1
        tokens.extend(leaves)
        parents.extend([previous] * len(leaves))
        depths.extend([depth] * (1 + len(leaves)))  # step i's spine node and its siblings: depth i
        previous = here
    return DraftTree.from_parents(tokens, parents, draft_entropy, depths=depths)
