"""Distil a draft from the frozen target: python -m svbench.train [--config-name draft_lm] [key=value ...]

Resumable: the state (trainable weights, optimiser, step, RNG) is saved atomically to ${out}/state.pt
every save_every steps and at the end; re-running the same command continues from it.
"""
from __future__ import annotations

import collections
import json
import math
import random
import sys
import time
from pathlib import Path

import hydra
import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from svbench.config import group_config
from svbench.draft_lm import draft_from_target, save_draft
from svbench.errors import SvbenchError, report_user_errors
from svbench.models import load_pair
from svbench.train.data import read_shards

REPO = Path(__file__).resolve().parents[2]


def top_tokens(rows: list[dict], n: int, always: tuple[int, ...]) -> list[int]:
    """The n most frequent answer tokens of the training data (plus `always`, e.g. EOS)."""
    counts = collections.Counter(t for r in rows for t in r["ids"][r["prompt_len"]:])
    chosen = [t for t in always] + [t for t, _ in counts.most_common() if t not in always]
    return sorted(chosen[:n])


def make_batch(rows: list[dict], seq_len: int, pad: int):
    """Right-padded (B, T) ids, attention mask, and the loss mask over answer positions."""
    cut = [r["ids"][:seq_len] for r in rows]
    width = max(len(c) for c in cut)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    answer = torch.zeros((len(rows), width), dtype=torch.bool)
    for b, (row, c) in enumerate(zip(rows, cut)):
        ids[b, : len(c)] = torch.tensor(c)
        attention[b, : len(c)] = 1
        answer[b, row["prompt_len"]: len(c)] = True  # positions whose token the target wrote
    return ids, attention, answer


def lr_at(step: int, cfg) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))  # cosine to 0


def train_draft_lm(cfg) -> None:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    pair_cfg = group_config("pair", cfg.pair)
    pair = load_pair(pair_cfg, "float32", "cpu", need_draft=False)
    folders = [Path(d) for d in ([cfg.data] if isinstance(cfg.data, str) else cfg.data)]
    rows = [r for folder in folders for r in read_shards(folder, split="train")]
    missing = [str(f) for f in folders if not (f / "manifest.json").is_file()]
    if missing:
        raise SvbenchError(f"data folder(s) {missing} have no manifest.json; regenerate with python -m svbench.train.data")
    manifest_hash = "+".join(json.loads((f / "manifest.json").read_text())["hash"] for f in folders)
    vocab = top_tokens(rows, cfg.reduced_vocab, pair.eos_token_ids) if cfg.reduced_vocab else None
    draft = draft_from_target(pair.target, cfg.num_layers, list(cfg.init_layers))
    del pair.target
    head = draft.lm_head.weight if vocab is None else draft.lm_head.weight[torch.tensor(vocab)].detach()  # (N, d)
    to_index = None
    if vocab is not None:  # full id -> subset index, -100 (ignored) outside the subset
        to_index = torch.full((draft.config.vocab_size,), -100, dtype=torch.long)
        to_index[torch.tensor(vocab)] = torch.arange(len(vocab))
    trainable = [p for p in draft.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    state_path, step = out / "state.pt", 0
    if state_path.is_file():
        state = torch.load(state_path, weights_only=False)
        draft.load_state_dict(state["draft"], strict=False)
        optimiser.load_state_dict(state["optimiser"])
        step = state["step"]
        random.setstate(state["python_rng"])
        torch.set_rng_state(state["torch_rng"])
        print(f"resumed from {state_path} at step {step}", file=sys.stderr)
    else:
        random.seed(cfg.seed)
    autocast = cfg.autocast == "bfloat16"
    pad = pair.tokenizer.pad_token_id or 0
    coverage = None
    if vocab is not None:
        answer_tokens = [t for r in rows for t in r["ids"][r["prompt_len"]:]]
        coverage = sum(int(to_index[t]) >= 0 for t in answer_tokens) / len(answer_tokens)
        print(f"reduced vocabulary: {len(vocab)} tokens cover {coverage:.4f} of answer tokens", file=sys.stderr)

    def save():
        trainable_state = {k: v for k, v in draft.state_dict().items() if k not in ("model.embed_tokens.weight",
                                                                                   "lm_head.weight")}
        tmp = state_path.with_suffix(".tmp")
        torch.save({"draft": trainable_state, "optimiser": optimiser.state_dict(), "step": step,
                    "python_rng": random.getstate(), "torch_rng": torch.get_rng_state(),
                    "config": OmegaConf.to_container(cfg)}, tmp)
        tmp.replace(state_path)

    draft.train()
    bar = tqdm(total=cfg.steps, initial=step, desc="train", unit="step", file=sys.stderr)
    tokens, start, ema_loss, ema_acc = 0, time.perf_counter(), None, None
    while step < cfg.steps:
        ids, attention, answer = make_batch(random.sample(rows, cfg.batch_size), cfg.seq_len, pad)
        labels = ids[:, 1:][answer[:, 1:]]  # (M,) the next token at every answer position
        if to_index is not None:
            labels = to_index[labels]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            hidden = draft.model(input_ids=ids, attention_mask=attention).last_hidden_state  # (B, T, d)
            hidden = hidden[:, :-1][answer[:, 1:]]  # (M, d): positions that predict an answer token
            logits = (hidden @ head.T).float()  # (M, N)
        loss = torch.nn.functional.cross_entropy(logits, labels, ignore_index=-100)
        for group in optimiser.param_groups:
            group["lr"] = lr_at(step, cfg)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
        optimiser.step()
        step += 1
        with torch.no_grad():
            valid = labels >= 0
            acc = float((logits.argmax(-1)[valid] == labels[valid]).float().mean()) if valid.any() else 0.0
        ema_loss = float(loss) if ema_loss is None else 0.98 * ema_loss + 0.02 * float(loss)
        ema_acc = acc if ema_acc is None else 0.98 * ema_acc + 0.02 * acc
        tokens += int(labels.numel())
        bar.update(1)
        bar.set_postfix(loss=f"{ema_loss:.3f}", top1=f"{ema_acc:.3f}", tok_s=f"{tokens / (time.perf_counter() - start):.0f}")
        if step % cfg.save_every == 0 or step == cfg.steps:
            save()
    bar.close()
    meta = {"recipe": cfg.recipe, "steps": step, "config": OmegaConf.to_container(cfg), "data_manifest_hash":
            manifest_hash, "train_rows": len(rows), "train_answer_tokens": sum(len(r["ids"]) - r["prompt_len"]
                                                                                 for r in rows),
            "vocab_size": len(vocab) if vocab else draft.config.vocab_size, "vocab_coverage": coverage,
            "final_train_loss_ema": ema_loss, "final_train_top1_ema": ema_acc}
    (out / "train_meta.json").write_text(json.dumps(meta, indent=2))
    if cfg.export:
        export = Path(cfg.export)
        save_draft(draft.eval(), export, vocab)
        (export / "train_meta.json").write_text(json.dumps(meta, indent=2))
        print(f"draft written to {export}", file=sys.stderr)


RECIPES = {"draft_lm": train_draft_lm}  # the GliDe draft and the EAGLE head add theirs


@hydra.main(version_base="1.3", config_path=str(REPO / "conf" / "train"), config_name="draft_lm")
def main(cfg) -> None:
    report_user_errors(RECIPES.get(cfg.recipe, unknown_recipe), cfg)


def unknown_recipe(cfg) -> None:
    raise SvbenchError(f"recipe={cfg.recipe!r} is not one of {sorted(RECIPES)}")


if __name__ == "__main__":
    main()
