"""svbench's KV cache: pre-allocated buffers written in place, for the target and every draft network.

transformers' DynamicCache concatenates on every forward (a copy of the whole cache per forward, per
layer). Here each layer owns buffers of ``capacity`` positions:

    update   writes the new K/V rows at [length, length + t) in place and returns views of [0, length + t)
    crop     moves ``length`` back (a rollback is free)
    keep     compacts an accepted tree path: copies only the path's rows to [start, start + k) in place

Only when a sequence outgrows the buffers are they re-allocated (capacity doubles: O(log n) copies per
sequence, none in steady state). The class plugs into the transformers models through their Cache
interface, so the models stay transformers' own.
"""
from __future__ import annotations

import inspect

import torch
import transformers
from transformers.cache_utils import Cache, CacheLayerMixin
from transformers.models.llama.modeling_llama import LlamaModel

DEFAULT_CAPACITY = 1024
# transformers 5.24 renamed the models' `past_key_values=` argument to `cache=`, which svbench passes; an older
# version silently swallows `cache=` into **kwargs and runs with a cache of its own (seen on the GPU check's
# machine, transformers 5.17: the target's StaticKVCache stayed empty). Refuse it with one line instead.
MIN_TRANSFORMERS = "5.24"


def models_take_cache() -> bool:
    """Whether the installed transformers' models take the cache as `cache=` (asked of LlamaModel.forward, so
    dev builds and backports answer for themselves)."""
    return "cache" in inspect.signature(LlamaModel.forward).parameters


def check_transformers(takes_cache: bool, version: str) -> None:
    """Raise ImportError (one line) when the models do not take `cache=`."""
    if not takes_cache:
        raise ImportError(f"svbench needs transformers>={MIN_TRANSFORMERS} (its models take `cache=`); "
                          f"found {version}: pip install 'transformers>={MIN_TRANSFORMERS},<6'")


check_transformers(models_take_cache(), transformers.__version__)


class StaticKVLayer(CacheLayerMixin):
    """One layer: keys / values (B, kv_heads, capacity, head_dim); rows [0, length) are valid. In a
    StaticKVCache they are views of the cache's one buffer for all layers (``owner``)."""
    is_croppable = True

    def __init__(self, capacity: int = DEFAULT_CAPACITY, owner: "StaticKVCache | None" = None):
        super().__init__()
        self.capacity, self.length = capacity, 0
        self.owner = owner

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device = key_states.device
        if self.owner is not None and self.owner.share(key_states, value_states):
            return  # the owner bound this layer's views (and every other layer's)
        B, H, _, D = key_states.shape  # (B, kv_heads, t, head_dim)
        self.keys = key_states.new_zeros(B, H, self.capacity, D)
        self.values = value_states.new_zeros(B, H, self.capacity, value_states.shape[-1])
        self.is_initialized = True

    def _grow(self, needed: int) -> None:
        if self.owner is not None and self.owner.kv is not None:
            self.owner.grow(needed)
            return
        capacity = max(needed, 2 * self.capacity)
        for name in ("keys", "values"):
            old = getattr(self, name)
            new = old.new_zeros(*old.shape[:2], capacity, old.shape[-1])
            new[:, :, : self.length] = old[:, :, : self.length]  # rare: only when a sequence outgrows the buffer
            setattr(self, name, new)
        self.capacity = capacity

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if end > self.capacity:
            self._grow(end)
        self.keys[:, :, self.length: end] = key_states  # in place: the cached rows are not touched
        self.values[:, :, self.length: end] = value_states
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]  # views (B, kv_heads, end, head_dim)

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.length + query_length, 0  # (kv_length, kv_offset), as DynamicLayer

    def get_seq_length(self) -> int:
        return self.length

    def get_max_length(self) -> int:
        return -1  # grows on demand

    def crop(self, tokens_to_remove: int) -> None:
        """Negative: drop that many rows from the end; 0: nothing (as transformers' DynamicLayer); positive
        (transformers' legacy): keep that many."""
        if tokens_to_remove < 0:
            self.length = max(0, self.length + tokens_to_remove)
        elif tokens_to_remove > 0:
            self.length = min(self.length, tokens_to_remove)

    def keep(self, start: int, rows: torch.Tensor) -> None:
        """Rows ``rows`` (ascending positions >= start) move to [start, start + k); the rest after start go."""
        k = rows.numel()
        self.keys[:, :, start: start + k] = self.keys.index_select(2, rows)  # (B, H, k, D): only the path's rows
        self.values[:, :, start: start + k] = self.values.index_select(2, rows)
        self.length = start + k

    def select_batch(self, rows: torch.Tensor) -> None:
        """Keep only batch rows ``rows`` (batched generation drops finished sequences; a copy, off the SD path)."""
        self.keys, self.values = self.keys.index_select(0, rows), self.values.index_select(0, rows)

    def reset(self) -> None:
        self.length = 0


class StaticKVCache(Cache):
    """A Cache of StaticKVLayer, one per decoder layer of the network it serves. When every layer's K/V
    has the same shape (every Llama-family network here), all layers live in ONE buffer
    ``kv`` (layers, 2, B, kv_heads, capacity, head_dim), so compacting a tree path or dropping batch rows
    is one gather and one copy for the whole cache instead of two per layer."""

    def __init__(self, num_layers: int, capacity: int = DEFAULT_CAPACITY):
        super().__init__(layers=[StaticKVLayer(capacity, self) for _ in range(num_layers)])
        self.kv: torch.Tensor | None = None

    def share(self, key_states: torch.Tensor, value_states: torch.Tensor) -> bool:
        """At the first layer's first update: allocate the one buffer and bind every layer's views.
        False (each layer keeps its own buffers) when K and V differ in shape."""
        if key_states.shape != value_states.shape:
            return False
        B, H, _, D = key_states.shape  # (B, kv_heads, t, head_dim)
        self.kv = key_states.new_zeros(len(self.layers), 2, B, H, self.layers[0].capacity, D)
        self._bind()
        return True

    def _bind(self) -> None:
        for i, layer in enumerate(self.layers):
            layer.keys, layer.values = self.kv[i, 0], self.kv[i, 1]  # (B, kv_heads, capacity, head_dim) views
            layer.capacity, layer.is_initialized = self.kv.shape[-2], True
            layer.device = self.kv.device

    def grow(self, needed: int) -> None:
        """Re-allocate the buffer at max(needed, 2 x capacity) positions (rare: a sequence outgrew it)."""
        old = self.kv
        self.kv = old.new_zeros(*old.shape[:-2], max(needed, 2 * old.shape[-2]), old.shape[-1])
        self.kv[..., : old.shape[-2], :] = old
        self._bind()

    def keep(self, start: int, rows: torch.Tensor) -> None:
        """Compact every layer: rows (LongTensor of positions >= start) go to [start, start + len(rows))."""
        if self.kv is None:
            for layer in self.layers:
                layer.keep(start, rows)
            return
        k = rows.numel()
        self.kv[..., start: start + k, :] = self.kv.index_select(4, rows)  # (layers, 2, B, H, k, D): the path only
        for layer in self.layers:
            layer.length = start + k

    def select_batch(self, rows: torch.Tensor) -> None:
        """Keep only batch rows ``rows`` (batched generation drops finished sequences; a copy, off the SD path)."""
        if self.kv is None:
            for layer in self.layers:
                layer.select_batch(rows)
            return
        self.kv = self.kv.index_select(2, rows)
        self._bind()
