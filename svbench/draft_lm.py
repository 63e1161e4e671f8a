"""DraftLM: the small draft LM for vanilla SD that svbench trains (svbench.train), stored without the
target's embedding.

A draft folder holds ``config.json`` (a LlamaConfig with few layers at the target's width),
``model.safetensors`` (its decoder layers and final norm only, bf16), optionally ``vocab_subset.json``
(the token ids of a reduced drafting vocabulary) and ``README.md`` (the model card). At load time the
embedding and lm_head are taken from the target (tied, frozen), so a 2-layer draft for SmolLM2-135M
is ~14 MB on disk instead of ~70 MB.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from svbench.draft_folder import read_state, write_draft_folder
from svbench.errors import SvbenchError

SHARED_WITH_TARGET = ("model.embed_tokens.weight", "lm_head.weight")


def draft_from_target(target, num_layers: int, init_layers: list[int] | None = None) -> LlamaForCausalLM:
    """A num_layers Llama at the target's width; layers copied from target layers init_layers (default the
    first ones), embedding/lm_head/final norm copied from the target."""
    config = LlamaConfig(**{**target.config.to_dict(), "num_hidden_layers": num_layers, "layer_types": None})
    config.tie_word_embeddings = False  # the head is a (frozen) copy, so a reduced head can be sliced
    draft = LlamaForCausalLM(config).to(target.dtype)
    init_layers = list(init_layers) if init_layers else list(range(num_layers))
    if len(init_layers) != num_layers or not all(0 <= i < target.config.num_hidden_layers for i in init_layers):
        raise SvbenchError(f"init_layers={init_layers} must name {num_layers} target layers")
    with torch.no_grad():
        for mine, source in zip(draft.model.layers, init_layers):
            mine.load_state_dict(target.model.layers[source].state_dict())
        draft.model.norm.load_state_dict(target.model.norm.state_dict())
        attach_target_embeddings(draft, target)
    return draft.eval()


def attach_target_embeddings(draft, target) -> None:
    with torch.no_grad():
        draft.model.embed_tokens.weight = torch.nn.Parameter(target.model.embed_tokens.weight.detach().clone(),
                                                             requires_grad=False)
        draft.lm_head.weight = torch.nn.Parameter(target.lm_head.weight.detach().clone(), requires_grad=False)


def save_draft(draft, folder: Path, vocab_subset: list[int] | None = None) -> None:
    """The LlamaConfig's non-default keys, the weights not shared with the target: svbench.draft_folder."""
    state = {k: v for k, v in draft.state_dict().items() if k not in SHARED_WITH_TARGET}
    write_draft_folder(folder, json.loads(draft.config.to_json_string()), state, "draft-lm", vocab_subset)


def load_draft(folder: Path, target) -> LlamaForCausalLM:
    folder = Path(folder)
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise SvbenchError(f"{folder} is not a svbench draft folder (config.json + model.safetensors)")
    config = LlamaConfig.from_json_file(folder / "config.json")
    if config.hidden_size != target.config.hidden_size or config.vocab_size != target.config.vocab_size:
        raise SvbenchError(f"draft {folder} does not fit this target (hidden/vocab size differ)")
    draft = LlamaForCausalLM(config)
    state = read_state(folder)
    missing, unexpected = draft.load_state_dict(state, strict=False)
    if unexpected or set(missing) - set(SHARED_WITH_TARGET):
        raise SvbenchError(f"draft {folder}: unexpected tensors {unexpected[:3]}, missing {missing[:3]}")
    attach_target_embeddings(draft, target)
    return draft.float().eval()


