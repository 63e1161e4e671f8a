"""The GliDe draft (ALGORITHMS.md §3): a small decoder whose layers also read the target's KV cache.

Each layer: x += SelfAttn(RMSNorm(x)) over the draft's own cache; x += CrossAttn(x) over the target's
cached K/V of one target layer (no norm before it, as the official code); x += MLP(RMSNorm(x)).
Cross-attention: queries = q_proj(x) split into the TARGET's heads x head_dim and RoPE-rotated at their
absolute positions with the target's RoPE (the cached keys are already rotated, so relative positions
line up); no K/V projections; GQA by repeating the target's K/V heads; o_proj back to the draft width.
Draft layer i of L_D reads target layer min(L_T - L_D + i, L_T - 1).

Tensor names follow the official release (``model.layers.{i}.self_attn.*``, ``.cross_attn.{q,o}_proj``,
``.mlp.*``, ``.input_layernorm``, ``.post_attention_layernorm``, ``model.norm``), so an official
state dict loads as is. Its config.json is a LlamaConfig plus ``large_hidden_size``,
``large_num_attention_heads``, ``large_head_dim`` (the target's), which svbench's files carry too, plus
``large_num_key_value_heads``, ``large_num_hidden_layers`` and ``large_rope_theta``.
Deviation: the official code rotates queries with base 10000 whatever the target; svbench uses the
target's whole RoPE configuration (``large_rope_parameters``: theta and scaling; equal for Vicuna/Llama-2,
required for SmolLM2, theta 1e5), and the draft's own self-attention uses it too (``rope_parameters``).
Drafts written before 2026-11-29 ran their self-attention at base 10000 (transformers 5 configs carry
``rope_parameters``, which was not copied); their files still load with what they were trained with.
The embedding and lm_head are the draft's own in official checkpoints; svbench's drafts share the
target's (frozen, not saved). Either way they live in the non-persistent buffers embed_weight/head_weight.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import (LlamaAttention, LlamaMLP, LlamaRMSNorm,
                                                      LlamaRotaryEmbedding, apply_rotary_pos_emb)

from svbench.attention import GROUPED_SDPA
from svbench.draft_folder import read_config, read_state
from svbench.errors import SvbenchError
from svbench.nets.common import additive_mask, attach_frozen, load_weights, save_net, vocab_rows

FORMAT = "glide-draft"
OWN_EMBEDDINGS = ("model.embed_tokens.weight", "lm_head.weight")


def rope_parameters(config) -> dict:
    """A config's whole RoPE configuration (theta, type, scaling), as transformers 5 stores it."""
    params = getattr(config, "rope_parameters", None)
    if params:
        return dict(params)
    return {"rope_type": "default", "rope_theta": getattr(config, "rope_theta", None) or 10000.0}


def target_rope_config(config: LlamaConfig) -> LlamaConfig:
    """A config whose rotary embedding equals the target's (head_dim and its whole RoPE configuration:
    ``large_rope_parameters``; older svbench and official files carry only ``large_rope_theta``)."""
    params = getattr(config, "large_rope_parameters", None) or \
        {"rope_type": "default", "rope_theta": getattr(config, "large_rope_theta", None) or 10000.0}
    return LlamaConfig(hidden_size=config.large_hidden_size, num_attention_heads=config.large_num_attention_heads,
                       head_dim=config.large_head_dim, rope_parameters=dict(params),
                       max_position_embeddings=config.max_position_embeddings)


def keys_before(positions: torch.Tensor, num_keys: int, dtype) -> torch.Tensor:
    """Additive (1, 1, T, S) cross mask for queries at positions (1, T) over target keys 0..S-1: a query sees
    the keys before its own position (key 0 at position 0: a fully masked row would give NaN). Drafting from
    the verified cache never needs it (the root and drafted tokens sit at or past S); feeding verified context
    does, because training (svbench.train.recipes.block_mask) never shows a query its own or later keys."""
    allowed = torch.arange(num_keys, device=positions.device)[None, :] < positions[0, :, None].clamp(min=1)  # (T, S)
    return additive_mask(allowed, dtype)  # (1, 1, T, S)


class CrossAttention(nn.Module):
    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.heads, self.head_dim = config.large_num_attention_heads, config.large_head_dim
        self.q_proj = nn.Linear(config.hidden_size, self.heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.heads * self.head_dim, config.hidden_size, bias=False)

    def forward(self, hidden, keys, values, cos, sin, mask=None) -> torch.Tensor:
        """hidden (B, T, d); keys/values (B, kv_T, S, hd_T) = the target's cache; cos/sin (B, T, hd_T) at the
        queries' positions; mask additive (B|1, 1, T, S) or None (every query sees all S)."""
        B, T, _ = hidden.shape
        q = self.q_proj(hidden).view(B, T, self.heads, self.head_dim).transpose(1, 2)  # (B, H_T, T, hd_T)
        q, _ = apply_rotary_pos_emb(q, q, cos, sin)
        kv = keys.shape[1]
        groups = self.heads // kv  # GQA: query head h reads KV head h // groups
        # fold each KV head's query heads into its rows instead of repeating the target's whole K/V per step
        q = q.reshape(B, kv, groups * T, self.head_dim)  # (B, kv_T, groups*T, hd_T): row g*T + t = head g, query t
        if mask is not None and groups > 1:
            mask = mask.repeat(1, 1, groups, 1)  # (B|1, 1, groups*T, S): the same rows for every query head
        out = nn.functional.scaled_dot_product_attention(q, keys.to(q.dtype), values.to(q.dtype), attn_mask=mask)
        out = out.reshape(B, self.heads, T, self.head_dim)  # (B, H_T, T, hd_T)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, -1))  # (B, T, d)


class GlideLayer(nn.Module):
    def __init__(self, config: LlamaConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.self_attn = LlamaAttention(config, layer_idx)
        self.cross_attn = CrossAttention(config)
        self.post_attention_layernorm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.mlp = LlamaMLP(config)

    def forward(self, x, self_rope, self_mask, cache, target_kv, cross_rope, cross_mask):
        x = x + self.self_attn(self.input_layernorm(x), position_embeddings=self_rope, attention_mask=self_mask,
                               cache=cache)[0]
        x = x + self.cross_attn(x, *target_kv, *cross_rope, mask=cross_mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class GlideModel(nn.Module):
    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.layers = nn.ModuleList([GlideLayer(config, i) for i in range(config.num_hidden_layers)])
        self.norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = LlamaRotaryEmbedding(config)
        self.target_rotary_emb = LlamaRotaryEmbedding(target_rope_config(config))


class GlideDraft(nn.Module):
    def __init__(self, config: LlamaConfig):
        super().__init__()
        config._attn_implementation = GROUPED_SDPA  # sdpa, K/V read in place (svbench.attention)
        self.config = config
        self.model = GlideModel(config)

    def target_layers(self) -> list[int]:
        """Which target layer each draft layer reads: the top L_D ones."""
        L_T, L_D = self.config.large_num_hidden_layers, self.config.num_hidden_layers
        return [min(L_T - L_D + i, L_T - 1) for i in range(L_D)]

    def forward(self, input_ids, position_ids, target_kv, self_mask=None, cross_mask=None, cache=None):
        """input_ids/position_ids (B, T); target_kv: per draft layer (keys, values) (B, kv_T, S, hd_T);
        self_mask additive (B|1, 1, T, past + T) or None (causal with no past; T = 1 sees the whole cache); cross_mask (B|1, 1, T, S) or
        None. Returns the final-normed hidden states (B, T, d)."""
        x = nn.functional.embedding(input_ids, self.embed_weight).to(self.model.norm.weight.dtype)  # (B, T, d)
        self_rope = self.model.rotary_emb(x, position_ids)
        cross_rope = self.model.target_rotary_emb(x, position_ids)
        for layer, kv in zip(self.model.layers, target_kv):
            x = layer(x, self_rope, self_mask, cache, kv, cross_rope, cross_mask)
        return self.model.norm(x)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden @ self.head_weight.T  # (..., V) or (..., N)


def glide_config_from_target(target_config, num_layers: int = 1, **overrides) -> LlamaConfig:
    """A GliDe draft at the target's width with the target's attention shape (so layers can start from
    target layers) and the large_* keys describing the target's cache."""
    t = target_config
    head_dim = getattr(t, "head_dim", None) or t.hidden_size // t.num_attention_heads
    keys = ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "head_dim",
            "rms_norm_eps", "max_position_embeddings", "vocab_size", "hidden_act")
    base = {k: getattr(t, k) for k in keys if getattr(t, k, None) is not None}
    rope = rope_parameters(t)  # the draft's self-attention and its cross-attention queries both use the target's
    base.update(num_hidden_layers=num_layers, rope_parameters=dict(rope), large_hidden_size=t.hidden_size,
                large_num_attention_heads=t.num_attention_heads, large_head_dim=head_dim,
                large_num_key_value_heads=t.num_key_value_heads, large_num_hidden_layers=t.num_hidden_layers,
                large_rope_theta=rope["rope_theta"], large_rope_parameters=dict(rope))
    return LlamaConfig(**{**base, **overrides})


def glide_from_target(target, num_layers: int = 1, vocab_ids=None, init_from=None) -> GlideDraft:
    """A fresh draft that starts as a causal LM reading token embeddings, with a silent cross-attention
    (q_proj copied from the target layer it reads, o_proj zero), so training starts from that LM and
    learns what to take from the target's cache. The LM: init_from (a LlamaForCausalLM with num_layers
    layers at the target's width, e.g. svbench's trained draft LM) or else the target's first num_layers
    layers; self-attention, MLP, norms and the final norm are copied from it."""
    draft = GlideDraft(glide_config_from_target(target.config, num_layers)).to(target.dtype)
    lm = init_from if init_from is not None else target
    if len(lm.model.layers) < num_layers:
        raise SvbenchError(f"init_from has {len(lm.model.layers)} layers, the GliDe draft needs {num_layers}")
    with torch.no_grad():
        for i, (layer, read) in enumerate(zip(draft.model.layers, draft.target_layers())):
            source = lm.model.layers[i]
            for name in ("input_layernorm", "self_attn", "post_attention_layernorm", "mlp"):
                getattr(layer, name).load_state_dict(getattr(source, name).state_dict())
            layer.cross_attn.q_proj.weight.copy_(target.model.layers[read].self_attn.q_proj.weight)
            layer.cross_attn.o_proj.weight.zero_()
        draft.model.norm.load_state_dict(lm.model.norm.state_dict())
    attach_frozen(draft, target, vocab_ids)
    return draft.eval()


def save_glide(draft: GlideDraft, folder: Path) -> None:
    config = draft.config.to_dict()
    save_net(draft, folder, config, FORMAT)


def load_glide(folder: Path, target, use_vocab_subset: bool = True) -> GlideDraft:
    """Load an svbench or official GliDe draft folder for this target (float32, eval mode)."""
    folder = Path(folder)
    raw = read_config(folder, "a GliDe draft")
    need = ("large_hidden_size", "large_num_attention_heads", "large_head_dim")
    if any(k not in raw for k in need):
        raise SvbenchError(f"{folder}/config.json lacks {[k for k in need if k not in raw]}: not a GliDe draft")
    t = target.config
    raw.setdefault("large_num_key_value_heads", t.num_key_value_heads)
    raw.setdefault("large_num_hidden_layers", t.num_hidden_layers)
    raw.setdefault("large_rope_theta", rope_parameters(t)["rope_theta"])
    target_head_dim = getattr(t, "head_dim", None) or t.hidden_size // t.num_attention_heads
    if (raw["large_num_attention_heads"], raw["large_head_dim"]) != (t.num_attention_heads, target_head_dim):
        raise SvbenchError(f"GliDe draft {folder} was made for a target with {raw['large_num_attention_heads']} "
                           f"heads x {raw['large_head_dim']}, this target has {t.num_attention_heads} x "
                           f"{target_head_dim}")
    draft = GlideDraft(LlamaConfig(**raw))
    state = read_state(folder)
    own = {k: state.pop(k) for k in OWN_EMBEDDINGS if k in state}
    vocab_ids = load_weights(draft, state, folder, target, use_vocab_subset, "GliDe draft")
    if own:  # an official draft brings its own embedding and head
        if set(own) != set(OWN_EMBEDDINGS) or own["lm_head.weight"].shape[0] != t.vocab_size:
            raise SvbenchError(f"GliDe draft {folder}: needs both {OWN_EMBEDDINGS} at the target's vocabulary size")
        draft.embed_weight = own["model.embed_tokens.weight"]
        head = own["lm_head.weight"]
        draft.head_weight = vocab_rows(head, vocab_ids)
    return draft.float().eval()
