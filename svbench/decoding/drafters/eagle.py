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
The expansion and the rerank are tensor ops on the head's device (topk / gather / a boolean ancestor
matrix for the level masks, a stable sort for the rerank): a round reads the host once per level (the
policy's entropy and q; not at all under a policy that knows the round's length up front, fixed or
heuristic) and once for the kept tree and the levels' entropies (the tree stays on the device for the
target's forward and the verifier), and sends the catch-up tokens once
(tests/test_tree_methods.py::test_eagle_drafting_syncs_once_per_level_plus_two). The trees equal those of
the earlier host-loop version (tokens, parents, entropies, ranks; checked on 48 trees when it was replaced).

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
from svbench.decoding.verify import entropy as entropy_of
from svbench.errors import SvbenchError
from svbench.models import load_target_reader
from svbench.nets.common import additive_mask, causal_mask
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

    def get_candidates(self, ids, policy, max_len, sampling, generator=None) -> DraftTree:
        self._absorb_features()
        P = len(ids) - 1  # verified tokens in the target cache; ids[P] is the root
        assert self.fed + len(self.pending) == P, "head and target caches out of step"
        if max_len <= 0:
            return DraftTree.chain(ids[-1], [])
        dtype, device, k = self.head.fc.weight.dtype, self.device, self.top_k
        # catch up: positions fed..P-1 take (f_t, x_{t+1}); the last output is f^_P -> q(x_{P+1})
        mask = causal_mask(self.fed, P - self.fed, dtype, device)
        out = self.head(torch.tensor([ids[self.fed + 1: P + 1]], device=device), self.pending.to(dtype)[None],
                        torch.arange(self.fed, P, device=device)[None], mask, self.cache)[0]  # (P - fed, d)
        self.fed, self.pending = P, None

        # Every tensor below stays on the device; the host reads one (entropy, q) pair per level (the
        # policy's decision, unless planned) and the kept tree once at the end. Node 0 is the root; nodes are numbered in
        # creation order, level by level, children of frontier row r at r*k .. r*k + k - 1 of their level.
        log_q = torch.log_softmax(self.head.logits(out[-1]).float(), dim=-1)  # (N,)
        top = log_q.topk(min(k, log_q.shape[-1]))  # level 1: (k,)
        tokens, parents, scores = [top.indices], [torch.zeros_like(top.indices)], [top.values]  # per level
        depths = [torch.ones_like(top.indices)]
        frontier = torch.arange(1, len(top.values) + 1, device=device)  # node ids (F,)
        frontier_scores, frontier_tokens = top.values, top.indices  # (F,)
        features = out[-1].expand(len(frontier), -1)  # (F, d): each frontier node's input = its parent's f^
        ancestors = torch.zeros(len(frontier), 0, dtype=torch.bool, device=device)  # (F, S): tree slots it sees
        entropy = entropy_of(log_q)
        level_entropy, levels, nodes = [entropy.view(1)], 1, 1 + len(frontier)  # H per level, on the device
        planned = policy.planned_steps(max_len)  # known up front (fixed, heuristic): no host read per level
        max_levels = min(self.depth + 1, max_len if planned is None else planned)
        stop = planned is None and policy_stops(policy, levels, entropy, top.values[0].exp())
        eye = torch.eye(k, dtype=torch.bool, device=device)  # a frontier node sees its own slot (F <= k)
        while not stop and levels < max_levels:
            F, S = len(frontier), ancestors.shape[1]
            tree_visible = torch.cat([ancestors, eye[:F, :F]], dim=1)  # (F, S + F): its ancestors' slots, itself
            mask = additive_mask(tree_visible, dtype, P)  # (1, 1, F, P + S + F): the cached prefix visible to all
            token_ids = frontier_tokens if self.vocab_ids is None else self.vocab_ids[frontier_tokens]
            position = torch.full((1, F), P + levels - 1, device=device)  # prefix + depth - 1
            out = self.head(token_ids[None], features[None], position, mask, self.cache)[0]  # (F, d)
            log_q = torch.log_softmax(self.head.logits(out).float(), dim=-1)  # (F, N)
            child = log_q.topk(min(k, log_q.shape[-1]), dim=-1)  # (F, k)
            child_scores = (frontier_scores[:, None] + child.values).flatten()  # (F*k,) log q along the path
            tokens.append(child.indices.flatten())
            parents.append(frontier.repeat_interleave(child.values.shape[1]))
            scores.append(child_scores)
            depths.append(torch.full_like(tokens[-1], levels + 1))
            keep = child_scores.topk(min(k, child_scores.numel())).indices  # the next frontier: (F',)
            rows = keep // child.values.shape[1]  # its parents' frontier rows
            best = keep[:1]  # (1,) = child_scores.argmax(); a 0-d tensor index would read its value on the host
            if self.entropy_aggregate == "top1":  # H of the distribution the best new node came from: one row
                row = log_q.index_select(0, best // child.values.shape[1])[0]  # (N,)
                entropy = entropy_of(row)
            else:
                entropies = entropy_of(log_q)  # (F,)
                entropy = entropies.max() if self.entropy_aggregate == "max" else entropies.mean()
            best_q = child.values.flatten().index_select(0, best).exp()  # (1,) q(best new node)
            frontier, frontier_scores = nodes + keep, child_scores[keep]
            frontier_tokens, features = child.indices.flatten()[keep], out[rows]
            ancestors = tree_visible[rows]  # the new frontier's parents' visibility, their slots included
            nodes += len(child_scores)
            levels += 1
            level_entropy.append(entropy.view(1))
            stop = planned is None and policy_stops(policy, levels, entropy, best_q)
        if levels > 1:  # drop the tree nodes: the head cache keeps verified positions only
            self.cache.crop(-(self.cache.get_seq_length() - P))
        return self._rerank(ids[-1], torch.cat(tokens), torch.cat(parents), torch.cat(scores), torch.cat(depths),
                            torch.cat(level_entropy))

    def _rerank(self, root, tokens, parents, scores, depths, level_entropy) -> DraftTree:
        """Keep the total_token - 1 best-scored nodes (ties: the earlier-created, i.e. shallower, node), in
        creation order. A child's score is never above its parent's, so every kept node's parent is kept.
        tokens/parents/scores/depths: (M,) over nodes 1..M; level_entropy (L,). One transfer (the levels'
        entropies ride along); the tree's device arrays stay."""
        order = torch.sort(scores, descending=True, stable=True).indices[: self.total_token - 1]  # (K,) best first
        kept = order.sort().values  # creation order: parents before children
        new_index = torch.full((len(scores) + 1,), -1, dtype=torch.long, device=scores.device)  # node id -> tree index
        new_index[0] = 0
        new_index[kept + 1] = torch.arange(1, len(kept) + 1, device=scores.device)
        token_ids = tokens[kept] if self.vocab_ids is None else self.vocab_ids[tokens[kept]]
        parts = [token_ids, new_index[parents[kept]], depths[kept]]
        if self.record_ranks:  # tree_size calibration only: per kept node, its place in the score order
            rank = torch.empty_like(scores, dtype=torch.long)
            rank[order] = torch.arange(len(order), device=order.device)
            parts.append(rank[kept])
        # ONE transfer: the kept tree, then the levels' entropies (float64 holds the ids and H exactly)
        host = torch.cat([p.double() for p in parts] + [level_entropy.double()]).tolist()
        L = len(level_entropy)  # >= 1
        host, draft_entropy = [int(v) for v in host[:-L]], host[-L:]
        K = len(kept)
        if self.record_ranks:
            self._ranks = [-1] + host[3 * K:]
        assert min(host[K:2 * K], default=0) >= 0, "a kept node's parent was dropped"
        on_device = torch.cat([token_ids.new_full((3, 1), 0), torch.stack(parts[:3])], dim=1)  # (3, 1 + K)
        on_device[0, 0] = root  # tokens | parents (the root points at itself) | depths
        return DraftTree.from_parents([root] + host[:K], [-1] + host[K:2 * K], draft_entropy, steps=len(draft_entropy),
                                      depths=[0] + host[2 * K:3 * K], device_arrays=on_device)

    def update_candidate_strategy(self, tree: DraftTree, accepted_path: list[int]) -> None:
        # the accepted tokens' features arrive through target.new_features at the next round
        if self.record_ranks:
            self.accepted_ranks.append([self._ranks[i] for i in accepted_path])


def policy_stops(policy, levels: int, entropy: torch.Tensor, best_q: torch.Tensor) -> bool:
    """The policy's decision after a level, from its H and q(best new node): ONE device->host transfer."""
    H, q = torch.stack([entropy.reshape(()), best_q.reshape(())]).tolist()
    return policy.should_stop(levels, q, H)
