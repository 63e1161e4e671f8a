"""DraftTree: every method's proposal. A chain (vanilla SD, GliDe) is a tree whose node i has parent i-1.

Node 0 is the root: the last emitted token, which is not yet in the target's KV cache. Nodes are in
topological order (parent index < node index), so the target scores them in one forward pass and row i
of its logits is the distribution of node i's next token.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from svbench.nets.common import additive_mask


@dataclass
class DraftTree:
    tokens: list[int]                 # (n,) node 0 = root
    parents: list[int]                # (n,) parents[0] = -1
    depths: list[int]                 # (n,) depths[0] = 0
    draft_probs: torch.Tensor | None = None  # (n, V): row i = q node i was SAMPLED from; None = deterministic
    draft_entropy: list[float] = field(default_factory=list)  # per draft step, nats, raw logits (T=1)
    is_chain: bool = True
    steps: int = 0                    # draft steps taken: tokens for a chain, levels for a tree (the policy's unit)
    # (3, n) long on the model's device: tokens, parents (the root points at itself), depths. A drafter that
    # built the tree on the device hands it over; otherwise arrays() uploads the lists once per round.
    device_arrays: torch.Tensor | None = None
    _ancestors: torch.Tensor | None = field(default=None, repr=False)

    @classmethod
    def chain(cls, root: int, drafted: list[int], draft_probs=None, draft_entropy=None) -> "DraftTree":
        n = len(drafted) + 1
        return cls([root] + list(drafted), list(range(-1, n - 1)), list(range(n)), draft_probs,
                   list(draft_entropy or []), True, len(drafted))

    @classmethod
    def from_parents(cls, tokens: list[int], parents: list[int], draft_entropy=None, steps=None, depths=None,
                     device_arrays=None) -> "DraftTree":
        """A general tree of deterministic candidates (CaPE, EAGLE-2). parents[0] must be -1. steps: the
        draft steps (levels) the drafter took; default the tree's depth. depths / device_arrays: when the
        drafter has them already (EAGLE builds the tree on the device)."""
        if depths is None:
            assert parents[0] == -1 and all(0 <= p < i for i, p in enumerate(parents) if i > 0), "not topological"
            depths = [0] * len(tokens)
            for i in range(1, len(tokens)):
                depths[i] = depths[parents[i]] + 1
        is_chain = parents == list(range(-1, len(tokens) - 1))
        steps = max(depths) if steps is None else steps
        return cls(list(tokens), list(parents), list(depths), None, list(draft_entropy or []), is_chain, steps,
                   device_arrays)

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def num_drafted(self) -> int:
        return len(self.tokens) - 1

    def children(self) -> list[list[int]]:
        kids: list[list[int]] = [[] for _ in self.tokens]
        for i in range(1, len(self.tokens)):
            kids[self.parents[i]].append(i)
        return kids

    def arrays(self, device=None) -> torch.Tensor:
        """(3, n) long on `device`: tokens, parents (the root points at itself), depths. One upload per tree
        at most (none when the drafter built them on the device)."""
        if self.device_arrays is None or (device is not None and self.device_arrays.device != torch.device(device)):
            self.device_arrays = torch.tensor([self.tokens, [0] + self.parents[1:], self.depths], device=device)
        return self.device_arrays

    def path_to(self, node: int) -> list[int]:
        """The root path ending at `node`, root excluded: a walk up `depth` parents on the host."""
        path = []
        while node > 0:
            path.append(node)
            node = self.parents[node]
        return path[::-1]

    def ancestor_matrix(self, device=None) -> torch.Tensor:
        """(n, n) bool on `device`: [i, j] is True when node j is node i or one of its ancestors. One gather
        per tree level, none per node: after d rounds of "a row ORs in its parent's row", every ancestor
        within d levels is in. Cached: the mask, the verifier and the cache compaction share it."""
        if self._ancestors is None or self._ancestors.device != self.arrays(device).device:
            parents = self.arrays(device)[1]  # (n,)
            visible = torch.eye(len(self.tokens), dtype=torch.bool, device=parents.device)
            for _ in range(max(self.depths)):
                visible = visible | visible[parents]
            self._ancestors = visible
        return self._ancestors

    def attention_mask(self, prefix_len: int, dtype: torch.dtype, device=None) -> torch.Tensor:
        """Additive 4-D mask (1, 1, n, prefix_len + n) built on `device`: 0 where a node may look (the cached
        prefix, its ancestors, itself), dtype-min elsewhere."""
        return additive_mask(self.ancestor_matrix(device), dtype, prefix_len)  # (1, 1, n, prefix + n)

    def position_ids(self, prefix_len: int, device=None) -> torch.Tensor:
        return (prefix_len + self.arrays(device)[2])[None]  # (1, n)
