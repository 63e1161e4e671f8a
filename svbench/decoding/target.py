"""The target model with its KV cache: prefill, one forward over a draft tree, keep the accepted path."""
from __future__ import annotations

import torch
from transformers import DynamicCache

from svbench.decoding.tree import DraftTree


class TargetCache:
    """Owns the target's DynamicCache. Invariant between rounds: the cache holds every emitted token
    except the last one (the next tree's root)."""

    def __init__(self, model):
        self.model = model
        self.cache = DynamicCache(config=model.config)
        self.cached_len = 0

    def prefill(self, ids: list[int]) -> torch.Tensor:
        """Cache ids; return the next-token logits after the last one: (1, V)."""
        input_ids = torch.tensor([ids], device=self.model.device)  # (1, L)
        out = self.model(input_ids=input_ids, cache=self.cache, use_cache=True, logits_to_keep=1)
        self.cached_len += len(ids)
        return out.logits[0]

    def forward_tree(self, tree: DraftTree) -> torch.Tensor:
        """Score root + drafts in ONE forward. Returns logits (n, V); row i = next-token logits of node i."""
        input_ids = torch.tensor([tree.tokens], device=self.model.device)  # (1, n)
        if tree.is_chain:  # plain causal mask: the fast path
            out = self.model(input_ids=input_ids, cache=self.cache, use_cache=True)
        else:
            mask = tree.attention_mask(self.cached_len, self.model.dtype, self.model.device)  # (1,1,n,P+n)
            positions = tree.position_ids(self.cached_len, self.model.device)  # (1, n): prefix + depth
            out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                             cache=self.cache, use_cache=True)
        return out.logits[0]  # (n, V)

    def keep_path(self, tree: DraftTree, path: list[int]) -> None:
        """After forward_tree the cache holds prefix + all n nodes; keep prefix + root + accepted path."""
        n = len(tree)
        if path == list(range(1, len(path) + 1)):  # the path is a prefix of the node order: just crop
            drop = n - 1 - len(path)
            if drop:
                self.cache.crop(-drop)
        else:  # gather the path's K/V into contiguous slots right after the root
            keep = torch.tensor([self.cached_len + i for i in [0] + path], device=self.model.device)
            for layer in self.cache.layers:
                # keys/values: (B, kv_heads, P + n, head_dim) -> keep the prefix, then the path
                layer.keys = torch.cat([layer.keys[:, :, : self.cached_len], layer.keys[:, :, keep]], dim=2)
                layer.values = torch.cat([layer.values[:, :, : self.cached_len], layer.values[:, :, keep]], dim=2)
        self.cached_len += 1 + len(path)
