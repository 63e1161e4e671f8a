"""EAGLE-2 (ALGORITHMS.md §5): the EAGLE head drafts a dynamic tree from the target's features.

Head positions: input t is (f_t, x_{t+1}) and outputs f^_{t+1}, whose lm_head row gives q(x_{t+2}).
The head's cache holds the verified positions only; tree nodes fed while expanding are cropped at the
end of the round.

Tree (one head forward per level):
  level 1: the top_k tokens of q at the root, score = log q.
  level l+1: feed the top_k frontier nodes (input = the parent's predicted feature + the node's token,
    position = prefix + depth - 1, tree mask), take the top_k children of each (k^2 candidates,
    score = parent score + log q(child)), keep the top_k of them as the next frontier.
  end: rerank every generated node by score and keep the best total_token - 1. A child's score is never
    above its parent's and ties go to the shallower node, so the kept set contains every kept node's
    ancestors.
Levels: at most depth + 1 (the official count: one initial forward + depth expansions), the policy's
max_len and the remaining budget. The policy is asked after each level with drafted_len = levels so
far, token_prob = q of the best-scored new node, and the frontier's draft entropy aggregated by
``entropy_aggregate``: ``top1`` = the distribution the best-scored new node was drawn from, ``max`` /
``mean`` over the distributions expanded at this level (svbench's choice for SVIP on trees: no
official code exists).
"""
from __future__ import annotations

import torch

from svbench.decoding.kv_cache import StaticKVCache
from svbench.decoding.tree import DraftTree
from svbench.errors import SvbenchError
from svbench.models import load_target_reader
from svbench.nets.common import causal_mask
from svbench.nets.eagle import head_from_target, load_head

AGGREGATES = ("top1", "max", "mean")


def load_eagle_network(spec, target):
    """The pair's ``eagle`` entry: fresh (``init_layer``, initialised from the target), or a folder."""
    return load_target_reader(spec, target, "eagle", lambda t, s: head_from_target(t, init_layer=s.get("init_layer")),
                              load_head)


class EagleDrafter:
    network = "eagle"
    draft_distribution = True
    load_network = staticmethod(load_eagle_network)

    def __init__(self, head, top_k: int = 10, depth: int = 5, total_token: int = 60,
                 entropy_aggregate: str = "top1"):
        if entropy_aggregate not in AGGREGATES:
            raise SvbenchError(f"method.drafter.entropy_aggregate={entropy_aggregate!r} must be one of {AGGREGATES}")
        for name, value, low in (("top_k", top_k, 1), ("depth", depth, 0), ("total_token", total_token, 2)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise SvbenchError(f"method.drafter.{name}={value!r} must be an integer >= {low}")
        self.head, self.top_k, self.depth, self.total_token = head, top_k, depth, total_token
        self.entropy_aggregate = entropy_aggregate
        self.record_ranks = False  # tree_size calibration: keep the rerank ranks of every accepted path
        self.accepted_ranks: list[list[int]] = []
        self._ranks: list[int] = []
        self.device = head.fc.weight.device
        self.vocab_ids = None if head.vocab_ids is None else torch.tensor(head.vocab_ids, device=self.device)
        self.reset()

    @classmethod
    def from_pair(cls, pair, top_k: int = 10, depth: int = 5, total_token: int | str = 60,
                  entropy_aggregate: str = "top1") -> "EagleDrafter":
        if total_token == "auto":
            from svbench.tree_size import tuned_total_token
            total_token = tuned_total_token(pair, top_k=top_k, depth=depth)
        return cls(pair.network, top_k, depth, total_token, entropy_aggregate)

    def reset(self, target=None) -> None:
        self.target = target
        self.cache = StaticKVCache(len(self.head.layers))
        self.fed = 0  # verified head positions in self.cache
        self.pending: torch.Tensor | None = None  # (k, d) target features not yet fed to the head

    def _absorb_features(self) -> None:
        new, self.target.new_features = self.target.new_features, None
        if new is not None:
            self.pending = new if self.pending is None else torch.cat([self.pending, new])

    def _head(self, tokens, features, positions, mask) -> torch.Tensor:
        """Feed (1, F) nodes; returns their predicted features (F, d)."""
        return self.head(torch.tensor([tokens], device=self.device), features[None],
                         torch.tensor([positions], device=self.device), mask, self.cache)[0]

    def _level_mask(self, visible_slots: list[list[int]], prefix: int, cache_len: int) -> torch.Tensor:
        """Additive (1, 1, F, cache_len + F): the verified prefix, the ancestors' slots and itself."""
        F = len(visible_slots)
        allowed = torch.zeros(F, cache_len + F, dtype=torch.bool)
        allowed[:, :prefix] = True
        for row, slots in enumerate(visible_slots):
            allowed[row, slots] = True
            allowed[row, cache_len + row] = True
        dtype = self.head.fc.weight.dtype
        mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)
        return mask[None, None].to(self.device)

    def get_candidates(self, ids, policy, max_len, sampling, generator=None) -> DraftTree:
        self._absorb_features()
        P = len(ids) - 1  # verified tokens in the target cache; ids[P] is the root
        assert self.fed + len(self.pending) == P, "head and target caches out of step"
        if max_len <= 0:
            return DraftTree.chain(ids[-1], [])
        # catch up: positions fed..P-1 take (f_t, x_{t+1}); the last output is f^_P -> q(x_{P+1})
        mask = causal_mask(self.fed, P - self.fed, self.head.fc.weight.dtype, self.device)
        out = self._head(ids[self.fed + 1: P + 1], self.pending.to(self.head.fc.weight.dtype),
                         list(range(self.fed, P)), mask)
        self.fed, self.pending = P, None

        k = self.top_k
        log_q = torch.log_softmax(self.head.logits(out[-1]).float(), dim=-1)  # (N,)
        top = log_q.topk(min(k, log_q.shape[-1]))
        # nodes (index 0 = root): vocabulary index, parent, score, depth; feature_in = parent's f^
        token, parent, score, depth = [-1], [-1], [0.0], [0]
        feature_in: dict[int, torch.Tensor] = {}
        for value, index in zip(top.values.tolist(), top.indices.tolist()):
            token.append(index), parent.append(0), score.append(value), depth.append(1)
            feature_in[len(token) - 1] = out[-1]
        frontier = list(range(1, len(token)))
        entropy = float(-(log_q.exp() * log_q).sum())
        levels, draft_entropy = 1, [entropy]
        max_levels = min(self.depth + 1, max_len)
        stop = policy.should_stop(1, float(top.values[0].exp()), entropy)
        slot: dict[int, int] = {}  # node -> its position in the head cache
        visible: dict[int, list[int]] = {0: []}  # node -> cache slots of its fed ancestors
        while not stop and levels < max_levels:
            cache_len = P + len(slot)
            rows = [visible[parent[n]] + ([slot[parent[n]]] if parent[n] in slot else []) for n in frontier]
            mask = self._level_mask(rows, P, cache_len)
            feats = torch.stack([feature_in[n] for n in frontier])  # (F, d)
            out = self._head([self._token(token[n]) for n in frontier], feats, [P + depth[n] - 1 for n in frontier], mask)
            for j, n in enumerate(frontier):
                slot[n], visible[n] = cache_len + j, rows[j]
            log_q = torch.log_softmax(self.head.logits(out).float(), dim=-1)  # (F, N)
            entropies = -(log_q.exp() * log_q).sum(-1)  # (F,)
            child = log_q.topk(min(k, log_q.shape[-1]), dim=-1)  # (F, k)
            child_scores = torch.tensor([score[n] for n in frontier], device=log_q.device)[:, None] + child.values
            first_new = len(token)
            for j, n in enumerate(frontier):
                for value, index in zip(child_scores[j].tolist(), child.indices[j].tolist()):
                    token.append(index), parent.append(n), score.append(value), depth.append(depth[n] + 1)
                    feature_in[len(token) - 1] = out[j]
            best = int(child_scores.flatten().argmax())  # row-major: frontier row best // k
            keep = child_scores.flatten().topk(min(k, child_scores.numel())).indices.tolist()
            frontier = [first_new + i for i in keep]
            levels += 1
            entropy = {"top1": float(entropies[best // child.values.shape[1]]), "max": float(entropies.max()),
                       "mean": float(entropies.mean())}[self.entropy_aggregate]
            draft_entropy.append(entropy)
            stop = policy.should_stop(levels, float(child.values.flatten()[best].exp()), entropy)
        if slot:  # drop the tree nodes: the head cache keeps verified positions only
            self.cache.crop(-len(slot))
        return self._rerank(ids[-1], token, parent, score, depth, draft_entropy)

    def _token(self, index: int) -> int:
        return index if self.vocab_ids is None else int(self.vocab_ids[index])

    def _rerank(self, root, token, parent, score, depth, draft_entropy) -> DraftTree:
        order = sorted(range(1, len(token)), key=lambda n: (-score[n], depth[n], n))[: self.total_token - 1]
        kept = sorted(order)  # creation order: parents before children
        if self.record_ranks:  # tree_size calibration only: per tree node, its place in the score order
            rank = {n: r for r, n in enumerate(order)}
            self._ranks = [-1] + [rank[n] for n in kept]
        new_index = {0: 0, **{n: i + 1 for i, n in enumerate(kept)}}
        tokens = [root] + [self._token(token[n]) for n in kept]
        parents = [-1] + [new_index[parent[n]] for n in kept]  # KeyError here = an ancestor was dropped
        return DraftTree.from_parents(tokens, parents, draft_entropy, steps=len(draft_entropy))  # steps = levels

    def update_candidate_strategy(self, tree: DraftTree, accepted_path: list[int]) -> None:
        # the accepted tokens' features arrive through target.new_features at the next round
        if self.record_ranks:
            self.accepted_ranks.append([self._ranks[i] for i in accepted_path])
