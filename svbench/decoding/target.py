"""The target model with its KV cache: prefill, one forward over a draft tree, keep the accepted path."""
from __future__ import annotations

import torch
from svbench.decoding.kv_cache import StaticKVCache
from svbench.decoding.tree import DraftTree


class TargetRunner:
    """Runs the target and owns its KV cache (svbench's StaticKVCache: written in place, rolled back by
    moving its length, an accepted tree path compacted by copying only the path's rows). Invariant between rounds: the cache holds every emitted token
    except the last one (the next tree's root).

    Drafters that read the target (GliDe: its cache; EAGLE: its features) get this object at reset().
    ``new_features`` holds the features (k, d) of the k tokens that entered the cache at the last prefill /
    keep_path, in order (the EAGLE head's input f_t): the final-normed last hidden states, or with
    ``feature_layers`` (EAGLE-3) the concatenated hidden states of those layers (k, 3d).
    """

    def __init__(self, model, capacity: int = 1024):
        self.model = model
        self.cache = StaticKVCache(model.config.num_hidden_layers, capacity)
        self.cached_len = 0
        self.new_features: torch.Tensor | None = None
        self._tree_features: torch.Tensor | None = None
        # what a feature is: None = the final-normed last hidden state (EAGLE-1/2); a list of hidden-state
        # indices (transformers' numbering: i < L = the input of layer i) = those states concatenated
        # (EAGLE-3: low, middle, high). Set by the drafter at reset().
        self.feature_layers: list[int] | None = None

    def _run(self, input_ids, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        """(the decoder's final-normed hidden states (1, n, d), the features (1, n, d) or (1, n, 3d));
        logits = lm_head(hidden) as the model's own forward does for Llama-family models (no logit scaling
        or soft-capping)."""
        layers = self.feature_layers
        out = self.model.model(input_ids=input_ids, cache=self.cache, use_cache=True,
                               output_hidden_states=layers is not None, **kwargs)
        hidden = out.last_hidden_state
        if layers is None:
            return hidden, hidden
        return hidden, torch.cat([out.hidden_states[i] for i in layers], dim=-1)  # (1, n, 3d)

    def prefill(self, ids: list[int]) -> torch.Tensor:
        """Cache ids; return the next-token logits after the last one: (1, V)."""
        input_ids = torch.tensor([ids], device=self.model.device)  # (1, L)
        hidden, features = self._run(input_ids)  # (1, L, d), (1, L, d or 3d)
        self.cached_len += len(ids)
        self.new_features = features[0]  # (L, d or 3d)
        return self.model.lm_head(hidden[:, -1])  # (1, V)

    def forward_tree(self, tree: DraftTree) -> torch.Tensor:
        """Score root + drafts in ONE forward. Returns logits (n, V); row i = next-token logits of node i."""
        input_ids = tree.arrays(self.model.device)[0][None]  # (1, n): uploaded once, or already there
        if tree.is_chain:  # plain causal mask: the fast path
            hidden, features = self._run(input_ids)
        else:
            mask = tree.attention_mask(self.cached_len, self.model.dtype, self.model.device)  # (1,1,n,P+n)
            positions = tree.position_ids(self.cached_len, self.model.device)  # (1, n): prefix + depth
            hidden, features = self._run(input_ids, attention_mask=mask, position_ids=positions)
        self._tree_features = features[0]  # (n, d or 3d)
        return self.model.lm_head(hidden[0])  # (n, V)

    def keep_path(self, tree: DraftTree, path: list[int]) -> None:
        """After forward_tree the cache holds prefix + all n nodes; keep prefix + root + accepted path."""
        n, k = len(tree), len(path)
        if path == list(range(1, k + 1)):  # the path is a prefix of the node order: just crop
            if n - 1 - k:
                self.cache.crop(-(n - 1 - k))
            self.new_features = self._tree_features[: 1 + k]  # (1 + k, d): root, then the path
        else:  # move the path's K/V rows to the slots right after the root, in place (the prefix stays put)
            # root + path = the ancestors of the path's last node, in node order; found on the device
            on_path = tree.ancestor_matrix(self.model.device)[path[-1]]  # (n,) bool
            nodes = torch.sort(on_path.to(torch.int8), descending=True, stable=True).indices[: 1 + k]  # (1 + k,)
            self.cache.keep(self.cached_len + 1, self.cached_len + nodes[1:])
            self.new_features = self._tree_features.index_select(0, nodes)  # (1 + k, d)
        self.cached_len += 1 + k
