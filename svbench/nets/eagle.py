"""The EAGLE head (ALGORITHMS.md §5): a feature-level draft that extrapolates the target's last hidden state.

    h_t      = FC_{2d->d}([embed(x_{t+1}); f_t])       embedding first, as the official head
    f^_{t+1} = DecoderLayers(h_t)                     num_hidden_layers Llama layers (official: 1), layer 0
                                                       without its input norm
    q_{t+2}  = softmax(lm_head(f^_{t+1}))             the target's frozen lm_head (optionally a row subset)

f_t is the target's final-normed last hidden state at position t. Parameter names equal the official
EAGLE-1/2 checkpoints' (``fc.*``, ``layers.0.*``; a head of more layers has ``layers.i.*`` with an input norm,
as the official code builds layer i > 0), so their state dicts load after dropping ``embed_tokens.weight``
(svbench takes the embedding from the target instead).

A head folder (svbench format): ``config.json`` (a LlamaConfig, num_hidden_layers=1 by default, plus ``bias`` and
``svbench_format: eagle-head``), ``model.safetensors`` (bf16), optional ``vocab_subset.json`` and README.md.
Official folders (``pytorch_model.bin`` or ``model.safetensors`` + config.json) load through the same
function.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

from svbench.attention import GROUPED_SDPA
from svbench.draft_folder import read_config, read_state
from svbench.errors import SvbenchError
from svbench.nets.common import attach_frozen, load_weights, save_net

FORMAT = "eagle-head"
OFFICIAL_IGNORED = ("embed_tokens.weight", "lm_head.weight", "norm.weight")  # taken from the target / unused


class EagleHead(nn.Module):
    def __init__(self, config: LlamaConfig, bias: bool = True):
        super().__init__()
        config._attn_implementation = GROUPED_SDPA  # sdpa, K/V read in place (svbench.attention)
        self.config = config
        d = config.hidden_size
        self.fc = nn.Linear(2 * d, d, bias=bias)
        self.layers = nn.ModuleList(LlamaDecoderLayer(config, layer_idx=i) for i in range(config.num_hidden_layers))
        self.layers[0].input_layernorm = nn.Identity()  # the official head's layer 0 has no input norm (i > 0 do)
        self.rotary_emb = LlamaRotaryEmbedding(config)

    def forward(self, input_ids, features, position_ids, attention_mask=None, cache=None) -> torch.Tensor:
        """input_ids (B, T) = x_{t+1}; features (B, T, d) = f_t; position_ids (B, T) = t; attention_mask:
        additive (B|1, 1, T, past + T) or None (then causal over T with no past). Returns f^_{t+1} (B, T, d)."""
        embeds = nn.functional.embedding(input_ids, self.embed_weight).to(features.dtype)  # (B, T, d)
        hidden = self.fc(torch.cat([embeds, features], dim=-1))  # (B, T, 2d) -> (B, T, d)
        position_embeddings = self.rotary_emb(hidden, position_ids)
        for layer in self.layers:
            hidden = layer(hidden, attention_mask=attention_mask, position_ids=position_ids, cache=cache,
                           use_cache=cache is not None, position_embeddings=position_embeddings)
        return hidden

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., d) -> (..., V) or (..., N) over the drafting vocabulary."""
        return hidden @ self.head_weight.T


def eagle_config_from_target(target_config, **overrides) -> LlamaConfig:
    """A LlamaConfig at the target's width (heads, MLP size, RoPE as the target), 1 layer unless overridden."""
    keys = ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "head_dim",
            "rms_norm_eps", "rope_theta", "rope_scaling", "rope_parameters", "max_position_embeddings",
            "vocab_size", "hidden_act")
    base = {k: getattr(target_config, k) for k in keys if getattr(target_config, k, None) is not None}
    return LlamaConfig(**{**base, "num_hidden_layers": 1, **overrides})


def head_from_target(target, init_layer: int | None = None, vocab_ids=None, bias: bool = True,
                     num_layers: int = 1) -> EagleHead:
    """A fresh head of num_layers decoder layers for this target that starts as the identity f^_{t+1} = f_t:
    fc = [0 | I] and every layer's output projections (o_proj, down_proj) zero, so all residual branches start
    silent. init_layer: copy that target layer's other weights into every layer (else PyTorch's default init)."""
    if not isinstance(num_layers, int) or num_layers < 1:
        raise SvbenchError(f"num_layers={num_layers!r}: an EAGLE head needs an integer >= 1 decoder layers")
    config = eagle_config_from_target(target.config, num_hidden_layers=num_layers)
    head = EagleHead(config, bias=bias).to(target.dtype)
    if init_layer is not None:
        source = target.model.layers[init_layer].state_dict()
        for i, layer in enumerate(head.layers):  # layer 0 has no input norm to copy
            layer.load_state_dict({k: v for k, v in source.items() if i or not k.startswith("input_layernorm")},
                                  strict=False)
    d = head.config.hidden_size
    with torch.no_grad():
        head.fc.weight.zero_()
        head.fc.weight[:, d:] = torch.eye(d)
        if head.fc.bias is not None:
            head.fc.bias.zero_()
        for layer in head.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
    attach_frozen(head, target, vocab_ids)
    return head.eval()


def head_layers(state: dict) -> int:
    """Decoder layers in a head's saved weights (``layers.i.*``); 1 for an EAGLE-3 head (its ``midlayer``)."""
    return 1 + max((int(k.split(".")[1]) for k in state if k.startswith("layers.")), default=0)


def save_head(head: EagleHead, folder: Path) -> None:
    config = {**head.config.to_dict(), "bias": head.fc.bias is not None}
    save_net(head, folder, config, FORMAT)


def load_head(folder: Path, target, use_vocab_subset: bool = True) -> EagleHead:
    """Load an svbench or an official EAGLE-1/2 head folder for this target (float32, eval mode)."""
    folder = Path(folder)
    raw = read_config(folder, "an EAGLE head")
    bias = bool(raw.pop("bias", True))  # official: a missing "bias" key means fc has a bias
    config = LlamaConfig(**raw)
    if config.hidden_size != target.config.hidden_size or config.vocab_size != target.config.vocab_size:
        raise SvbenchError(f"EAGLE head {folder} does not fit this target: hidden/vocab "
                           f"{config.hidden_size}/{config.vocab_size} vs {target.config.hidden_size}/"
                           f"{target.config.vocab_size}")
    head = EagleHead(config, bias=bias)
    state = {k: v for k, v in read_state(folder).items() if k not in OFFICIAL_IGNORED}
    load_weights(head, state, folder, target, use_vocab_subset, "EAGLE head")
    return head.float().eval()
