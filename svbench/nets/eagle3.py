"""The EAGLE-3 head: a draft that reads three of the target's layers and then its own outputs.

    g_t        = FC_{3d->d}([h_low; h_mid; h_high]_t)           first step only: the target's hidden states
                                                               entering layers 2, L//2, L-3 (low, mid, high)
    x          = [RMSNorm_in(embed(x_{t+1})); RMSNorm_hid(g_t)]  embedding first: (2d)
    a          = g_t + SelfAttn(x)                               q/k/v read 2d, o_proj back to d
    g_{t+1}    = a + MLP(RMSNorm_post(a))                       fed back as the next step's g (no FC)
    q(x_{t+2}) = softmax(lm_head(RMSNorm(g_{t+1})))             lm_head over a draft vocabulary of N tokens

The draft vocabulary maps to target ids by ``d2t``: target id = i + d2t[i] (N,), and ``t2d`` (V,) marks
the target ids it holds, as the official release (SafeAILab/EAGLE, eagle/model/cnets.py). Parameter
names equal the official checkpoints' (``fc``, ``midlayer.*``, ``norm``, ``lm_head``, ``d2t``, ``t2d``);
the token embedding is the target's (``embed_tokens`` in a file is ignored, as the official loader does
when the target's embedding is at hand).

A head folder: ``config.json`` (a LlamaConfig with num_hidden_layers=1, ``draft_vocab_size``, and in
svbench's files ``svbench_format: eagle3-head``, ``feature_layers`` and the target's RoPE) and
``model.safetensors`` (svbench: bf16) or ``pytorch_model.bin`` (official). RoPE: an official config
carries no rope_theta, so its head rotates with base 10000 (as the official code); svbench's heads carry
the target's RoPE configuration.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaAttention, LlamaMLP, LlamaRMSNorm, LlamaRotaryEmbedding

from svbench.attention import GROUPED_SDPA
from svbench.draft_folder import read_config, read_state, write_draft_folder
from svbench.errors import SvbenchError
from svbench.nets.common import vocab_mask, vocab_rows

FORMAT = "eagle3-head"
OFFICIAL_IGNORED = ("embed_tokens.weight",)  # the target's embedding is used


def feature_layers(num_layers: int) -> list[int]:
    """The official choice: the hidden states entering layers 2, L//2 and L-3 (transformers' hidden_states
    numbering, where index i < L is the input of layer i)."""
    return [2, num_layers // 2, num_layers - 3]


class Eagle3Layer(nn.Module):
    """One decoder layer whose attention reads [norm(embedding); norm(hidden)] (2d wide)."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        d = config.hidden_size
        self.self_attn = LlamaAttention(config, layer_idx=0)
        heads, kv_heads, head_dim = config.num_attention_heads, config.num_key_value_heads, self.self_attn.head_dim
        self.self_attn.q_proj = nn.Linear(2 * d, heads * head_dim, bias=False)
        self.self_attn.k_proj = nn.Linear(2 * d, kv_heads * head_dim, bias=False)
        self.self_attn.v_proj = nn.Linear(2 * d, kv_heads * head_dim, bias=False)
        self.mlp = LlamaMLP(config)
        self.hidden_norm = LlamaRMSNorm(d, eps=config.rms_norm_eps)
        self.input_layernorm = LlamaRMSNorm(d, eps=config.rms_norm_eps)
        self.post_attention_layernorm = LlamaRMSNorm(d, eps=config.rms_norm_eps)

    def forward(self, embeds, hidden, position_embeddings, attention_mask, cache):
        x = torch.cat([self.input_layernorm(embeds), self.hidden_norm(hidden)], dim=-1)  # (B, T, 2d)
        hidden = hidden + self.self_attn(x, position_embeddings=position_embeddings, attention_mask=attention_mask,
                                         cache=cache)[0]  # the residual is the un-normed hidden input
        return hidden + self.mlp(self.post_attention_layernorm(hidden))  # (B, T, d)


class Eagle3Head(nn.Module):
    def __init__(self, config: LlamaConfig, target_layers: list[int]):
        super().__init__()
        config._attn_implementation = GROUPED_SDPA  # sdpa, K/V read in place (svbench.attention)
        self.config, self.target_layers = config, list(target_layers)
        d, n = config.hidden_size, int(getattr(config, "draft_vocab_size", None) or config.vocab_size)
        self.fc = nn.Linear(len(self.target_layers) * d, d, bias=False)
        self.midlayer = Eagle3Layer(config)
        self.norm = LlamaRMSNorm(d, eps=config.rms_norm_eps)
        self.lm_head = nn.Linear(d, n, bias=False)
        self.register_buffer("d2t", torch.zeros(n, dtype=torch.long))  # draft index i -> target id i + d2t[i]
        self.register_buffer("t2d", torch.zeros(config.vocab_size, dtype=torch.bool))
        self.rotary_emb = LlamaRotaryEmbedding(config)

    @property
    def layers(self) -> list[nn.Module]:
        return [self.midlayer]  # one cached layer (the drafter sizes its KV cache by len(head.layers))

    @property
    def vocab_ids(self) -> list[int] | None:
        """Target ids of the draft vocabulary (None when it is the whole target vocabulary)."""
        if self.lm_head.out_features == self.config.vocab_size:
            return None
        return (torch.arange(self.lm_head.out_features, device=self.d2t.device) + self.d2t).tolist()

    def set_vocabulary(self, vocab_ids: list[int] | None) -> None:
        """d2t / t2d for a draft vocabulary of target ids (ascending; None = all)."""
        ids = torch.arange(self.config.vocab_size) if vocab_ids is None else torch.tensor(sorted(vocab_ids))
        if len(ids) != self.lm_head.out_features:
            raise SvbenchError(f"{len(ids)} vocabulary ids for a head over {self.lm_head.out_features} tokens")
        with torch.no_grad():
            self.d2t.copy_(ids - torch.arange(len(ids)))
            self.t2d.copy_(vocab_mask(self.config.vocab_size, ids))

    def forward(self, input_ids, features, position_ids, attention_mask=None, cache=None) -> torch.Tensor:
        """input_ids (B, T) = x_{t+1}; features (B, T, 3d) = the target's fused layers (first step) or
        (B, T, d) = this head's own outputs (later steps); position_ids (B, T); attention_mask additive or
        boolean (B|1, 1, T, past + T) or None (causal, no past). Returns g_{t+1} (B, T, d), before the norm."""
        if features.shape[-1] != self.config.hidden_size:  # the target's layers: fuse them (first step only)
            features = self.fc(features.to(self.fc.weight.dtype))
        embeds = nn.functional.embedding(input_ids, self.embed_weight).to(features.dtype)  # (B, T, d)
        position_embeddings = self.rotary_emb(features, position_ids)
        return self.midlayer(embeds, features, position_embeddings, attention_mask, cache)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., d) -> (..., N) over the draft vocabulary."""
        return self.lm_head(self.norm(hidden))


def eagle3_config_from_target(target_config, draft_vocab_size: int | None = None) -> LlamaConfig:
    """A 1-layer config at the target's width, with the target's RoPE and the draft vocabulary size."""
    keys = ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "head_dim",
            "rms_norm_eps", "rope_parameters", "max_position_embeddings", "vocab_size", "hidden_act")
    base = {k: getattr(target_config, k) for k in keys if getattr(target_config, k, None) is not None}
    return LlamaConfig(**{**base, "num_hidden_layers": 1,
                          "draft_vocab_size": draft_vocab_size or target_config.vocab_size})


def eagle3_from_target(target, vocab_ids: list[int] | None = None) -> Eagle3Head:
    """A fresh head for this target over the draft vocabulary vocab_ids (target ids; None = all): lm_head
    rows and the final norm start as the target's, the layer starts as PyTorch's default init."""
    config = eagle3_config_from_target(target.config, len(vocab_ids) if vocab_ids is not None else None)
    head = Eagle3Head(config, feature_layers(target.config.num_hidden_layers))
    head.set_vocabulary(vocab_ids)
    with torch.no_grad():
        rows = target.get_output_embeddings().weight.detach()
        head.lm_head.weight.copy_(vocab_rows(rows, None if vocab_ids is None else sorted(vocab_ids)))
        head.norm.weight.copy_(target.model.norm.weight)
    attach_embedding(head, target)
    return head.to(target.dtype).eval()


def attach_embedding(head: Eagle3Head, target) -> None:
    head.register_buffer("embed_weight", target.get_input_embeddings().weight.detach(), persistent=False)


def save_eagle3(head: Eagle3Head, folder: Path) -> None:
    """config.json + model.safetensors (bf16; d2t stays int64, t2d bool): svbench.draft_folder."""
    config = {**head.config.to_dict(), "feature_layers": head.target_layers, "svbench_format": FORMAT}
    write_draft_folder(folder, config, head.state_dict(), FORMAT)


def load_eagle3(folder: Path, target, use_vocab_subset: bool = True) -> Eagle3Head:
    """Load an svbench or an official EAGLE-3 head folder for this target (float32, eval mode). A file
    without d2t/t2d (draft vocabulary = the target's) gets the identity mapping."""
    folder = Path(folder)
    raw = read_config(folder, "an EAGLE-3 head")
    layers = raw.pop("feature_layers", None) or feature_layers(target.config.num_hidden_layers)
    config = LlamaConfig(**raw)
    if config.hidden_size != target.config.hidden_size or config.vocab_size != target.config.vocab_size \
            or getattr(config, "target_hidden_size", config.hidden_size) != target.config.hidden_size:
        raise SvbenchError(f"EAGLE-3 head {folder} does not fit this target: hidden/vocab {config.hidden_size}/"
                           f"{config.vocab_size} vs {target.config.hidden_size}/{target.config.vocab_size}")
    head = Eagle3Head(config, layers)
    state = {k: v for k, v in read_state(folder).items() if k not in OFFICIAL_IGNORED}
    if "d2t" not in state:
        if head.lm_head.out_features != config.vocab_size:
            raise SvbenchError(f"EAGLE-3 head {folder}: a draft vocabulary of {head.lm_head.out_features} tokens "
                               f"needs d2t in the checkpoint")
        head.set_vocabulary(None)
        state["d2t"], state["t2d"] = head.d2t.clone(), head.t2d.clone()
    state.setdefault("t2d", vocab_mask(config.vocab_size, torch.arange(len(state["d2t"])) + state["d2t"].long()))
    state["d2t"], state["t2d"] = state["d2t"].long(), state["t2d"].bool()
    missing, unexpected = head.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise SvbenchError(f"EAGLE-3 head {folder}: missing tensors {missing[:4]}, unexpected {unexpected[:4]}")
    attach_embedding(head, target)
    return head.float().eval()
