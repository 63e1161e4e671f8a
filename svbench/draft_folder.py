"""A draft folder on disk: ``config.json``, ``model.safetensors`` (the draft's own tensors; floating ones in bf16) and
``vocab_subset.json`` (the token ids of a reduced drafting vocabulary, only when reduced) are written here for
every draft kind, and the config, the tensors and the vocabulary are read here; each kind's loader builds its
network from them (svbench.draft_lm, svbench.nets). svbench.train adds ``train_meta.json``, svbench.train.eval
``eval.json`` and ``README.md`` (the model card)."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from svbench.errors import SvbenchError

VOCAB_SUBSET = "vocab_subset.json"


def write_draft_folder(folder, config: dict, state: dict[str, torch.Tensor], fmt: str,
                       vocab_ids: list[int] | None = None) -> None:
    """Write a new draft into folder. The previous draft's vocabulary, eval and card are removed first: they
    describe other weights (svbench.train.eval --write-card makes the new card)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in (VOCAB_SUBSET, "eval.json", "README.md"):
        (folder / stale).unlink(missing_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True, default=str))
    tensors = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v).detach().contiguous() for k, v in state.items()}
    save_file(tensors, folder / "model.safetensors", metadata={"format": "svbench-" + fmt})
    if vocab_ids is not None:
        (folder / VOCAB_SUBSET).write_text(json.dumps(list(vocab_ids)))


def read_config(folder, kind: str) -> dict:
    """The folder's config.json as a dict, without svbench's format tag; kind names the draft in the error
    (e.g. "an EAGLE head")."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise SvbenchError(f"{folder}: not {kind} folder (no config.json)")
    raw = json.loads(path.read_text())
    raw.pop("svbench_format", None)
    return raw


def read_vocab_subset(folder) -> list[int] | None:
    """The folder's drafting vocabulary (token ids), or None for the target's full vocabulary."""
    path = Path(folder) / VOCAB_SUBSET
    return json.loads(path.read_text()) if path.is_file() else None


def read_state(folder) -> dict[str, torch.Tensor]:
    """The folder's tensors: model.safetensors, else pytorch_model.bin (the official EAGLE releases' file)."""
    folder = Path(folder)
    if (folder / "model.safetensors").is_file():
        from safetensors.torch import load_file
        return load_file(folder / "model.safetensors")
    if (folder / "pytorch_model.bin").is_file():
        return torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise SvbenchError(f"{folder}: no model.safetensors or pytorch_model.bin")
