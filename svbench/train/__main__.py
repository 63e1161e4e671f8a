"""Distil a draft from the frozen target: python -m svbench.train [--config-name draft_lm] [key=value ...]

Resumable: the state (trainable weights, optimiser, step, RNG, drafting vocabulary) is saved atomically to
${out}/state.pt every save_every steps and at the end; re-running the same command continues from it. A run
may continue on grown data (more shards) or for more steps (the cosine schedule is stretched to the new
steps=): it keeps its drafting vocabulary, and train_meta.json lists every data manifest it trained on.
A resumed run must keep the module's settings (MODEL_KEYS). steps= below the state's step exports the
state as it is, without training (e.g. `steps=1 export=DIR` while the run goes on), recording the run's own
config and schedule; re-running a finished run re-exports it with its own train_meta.json. Exporting into a folder
deletes the previous draft's eval.json, README.md and vocab_subset.json first (svbench.draft_folder;
svbench.train.eval remakes the card).
"""
from __future__ import annotations

import collections
import ctypes
import heapq
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
from svbench.environment import warn_if_bf16_is_slow
from svbench.errors import SvbenchError, report_user_errors
from svbench.models import load_pair
from svbench.nets.eagle import head_layers
from svbench.train.data import check_manifest, read_shards
from svbench.train.recipes import RECIPES

REPO = Path(__file__).resolve().parents[2]
# settings that decide the trained module's shape or starting point: a resumed run must keep them
MODEL_KEYS = ("pair", "num_layers", "init_layers", "init_layer", "init_from", "train_only_cross_attention",
              "reduced_vocab")


def keep_freed_memory() -> bool:
    """Keep freed blocks in the process heap (glibc mallopt) instead of returning them to the OS. By default
    glibc maps every block over its mmap threshold (128 KiB, raised as blocks are freed, to at most 32 MiB)
    with mmap and unmaps it on free, so a training step page-faults its
    ~1.3 GB of fresh (M, N) logits and activations anew each time (~330k faults a step). On session 27's Xeon
    this alone took an EAGLE step from 2.68 to 2.16 s (median; results/train_step_speed_s27_heap.md). But the
    heap then grew ~14 MB a step in a long run with length_group=16 (7.2 GB of heap at step 465, on course to
    exhaust 24 GB), so it is opt-in (keep_freed_memory=true) until that is understood. False where glibc is not
    there (the defaults stay)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    return bool(libc.mallopt(M_MMAP_THRESHOLD, 1 << 30) and libc.mallopt(M_TRIM_THRESHOLD, 2 ** 31 - 1))  # int args


def top_tokens(rows: list[dict], n: int, always: tuple[int, ...]) -> list[int]:
    """The n most frequent answer tokens of the training data (plus `always`, e.g. EOS)."""
    counts = collections.Counter(t for r in rows for t in r["ids"][r["prompt_len"]:])
    chosen = [t for t in always] + [t for t, _ in counts.most_common() if t not in always]
    return sorted(chosen[:n])


def row_weights(rows: list[dict], source_weights: dict) -> list[float] | None:
    """Each row's sampling weight: source_weights[its dataset] (the row's source up to the first '/', e.g.
    gsm8k), 1 for a dataset not named; None when nothing is named (uniform draws, the stream of every run before)."""
    if not source_weights:
        return None
    datasets = [r["source"].split("/")[0] for r in rows]  # gsm8k/train.jsonl -> gsm8k
    known = set(datasets)
    for name, weight in source_weights.items():
        if name not in known:
            raise SvbenchError(f"source_weights.{name}: no training row comes from it; "
                               f"the data's sources: {sorted(known)}")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 < weight < math.inf:
            raise SvbenchError(f"source_weights.{name}={weight!r}: expected a number > 0")
    return [float(source_weights.get(d, 1.0)) for d in datasets]


def draw_batches(rows: list[dict], batch_size: int, length_group: int,
                 weights: list[float] | None = None) -> list[list[int]]:
    """The next batches of row indices, drawn with `random` (whose state a run saves). length_group 1: one
    batch of batch_size distinct random rows. length_group g > 1: g x batch_size distinct random rows sorted
    by length and cut into g batches of neighbours (fewer, the last one short, when the data holds fewer
    rows), in random order (Hugging Face's group_by_length), so a
    batch pads far less: on the chain's data 62% of a random batch of 8's positions are real tokens, 92% with
    length_group 16, and an EAGLE step ran 1.27x more real tokens/s (results/train_step_speed_s27.md).
    weights (row_weights): the distinct rows are drawn with those odds instead of uniformly."""
    n = min(batch_size * length_group, len(rows))
    if weights is None:
        chosen = random.sample(range(len(rows)), n)
    else:  # weighted, without replacement (Efraimidis-Spirakis): the n rows with the largest u^(1/w), u ~ U(0, 1)
        keys = [random.random() ** (1.0 / w) for w in weights]
        chosen = heapq.nlargest(n, range(len(rows)), key=keys.__getitem__)
    if length_group == 1:
        return [chosen]
    chosen.sort(key=lambda i: len(rows[i]["ids"]))
    batches = [chosen[k: k + batch_size] for k in range(0, n, batch_size)]
    random.shuffle(batches)
    return batches


def make_batch(rows: list[dict], seq_len: int, pad: int):
    """Right-padded (B, T) ids, attention mask, and the loss mask over answer positions. A sequence longer
    than seq_len keeps its answer: the prompt is cut from the left to at most seq_len // 2 tokens."""
    starts = [max(0, r["prompt_len"] - seq_len // 2) for r in rows]
    cut = [r["ids"][s: s + seq_len] for r, s in zip(rows, starts)]
    width = max(len(c) for c in cut)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    answer = torch.zeros((len(rows), width), dtype=torch.bool)
    for b, (row, c, start) in enumerate(zip(rows, cut, starts)):
        ids[b, : len(c)] = torch.tensor(c)
        attention[b, : len(c)] = 1
        answer[b, row["prompt_len"] - start: len(c)] = True  # positions whose token the target wrote
    return ids, attention, answer


def train_step(recipe, optimiser, trainable: list, rows: list[dict], batch: list[int], cfg, pad: int, lr: float):
    """One step of the loop on rows[batch]: padded batch, the recipe's loss under cfg.autocast, backward, clip
    to cfg.grad_clip, AdamW at lr. Returns (loss, top-1 agreement, answer tokens, attention mask (B, T)), or
    None when the batch has no answer tokens (then nothing is updated)."""
    ids, attention, answer = make_batch([rows[i] for i in batch], cfg.seq_len, pad)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.autocast == "bfloat16"):
        loss, acc, n_tokens = recipe.loss(ids, attention, answer, keys=batch)
    if n_tokens == 0:
        return None
    for group in optimiser.param_groups:
        group["lr"] = lr
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
    optimiser.step()
    return loss.detach().item(), acc, n_tokens, attention


def lr_at(step: int, cfg, steps: int | None = None) -> float:
    """Linear warm-up, then cosine to 0 at `steps` (default cfg.steps)."""
    steps = cfg.steps if steps is None else steps
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, steps - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))  # cosine to 0


def train(cfg) -> None:
    """The loop shared by every recipe (svbench/train/recipes.py)."""
    if cfg.recipe not in RECIPES:
        raise SvbenchError(f"recipe={cfg.recipe!r} is not one of {sorted(RECIPES)}")
    for key in ("steps", "batch_size", "save_every", "seq_len", "length_group"):
        if not isinstance(cfg[key], int) or cfg[key] < 1:
            raise SvbenchError(f"{key}={cfg[key]!r}: expected an integer >= 1")
    for key in ("mask_outside_vocab", "keep_freed_memory"):
        if not isinstance(cfg.get(key, False), bool):
            raise SvbenchError(f"{key}={cfg[key]!r}: expected true or false")
    if cfg.get("source_weights") is not None and not OmegaConf.is_dict(cfg.source_weights):
        raise SvbenchError(f"source_weights={cfg.source_weights!r}: expected {{dataset: weight}}, "
                           f"e.g. 'source_weights={{ud_german:4}}'")
    if cfg.autocast not in ("bfloat16", "float32"):
        raise SvbenchError(f"autocast={cfg.autocast!r}: expected bfloat16 or float32")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.get("keep_freed_memory", False) and not keep_freed_memory():
        print("keep_freed_memory=true: glibc's mallopt is not available here; the heap keeps its defaults",
              file=sys.stderr)
    torch.manual_seed(cfg.seed)
    pair_cfg = group_config("pair", cfg.pair)
    pair = load_pair(pair_cfg, "float32", "cpu", drafter_cls=None)
    folders = [Path(d) for d in ([cfg.data] if isinstance(cfg.data, str) else cfg.data)]
    manifest_hash = "+".join(check_manifest(f)["hash"] for f in folders)
    rows = [r for folder in folders for r in read_shards(folder, split="train")]
    source_weights = OmegaConf.to_container(cfg.source_weights) if cfg.get("source_weights") else {}
    weights = row_weights(rows, source_weights)
    out = Path(cfg.out)
    state_path, step, elapsed = out / "state.pt", 0, 0.0  # elapsed: training wall seconds over all resumes
    state = torch.load(state_path, weights_only=False) if state_path.is_file() else None
    if state is not None and state.get("config", {}).get("recipe", cfg.recipe) != cfg.recipe:
        raise SvbenchError(f"{state_path} was written by recipe {state['config']['recipe']!r}, not {cfg.recipe!r}; "
                           f"use another out=")
    if state is not None:
        saved, given = dict(state["config"]), OmegaConf.to_container(cfg)
        if cfg.recipe in ("eagle", "eagle3"):  # their configs before session 28 carried the draft LM's unused
            saved["num_layers"] = head_layers(state["draft"])  # num_layers: 2; the weights say how many there are
        changed = {k: (saved[k], given[k]) for k in MODEL_KEYS if k in saved and k in given and saved[k] != given[k]}
        if changed:
            raise SvbenchError(f"{state_path} was trained with other model settings (saved, given): {changed}; "
                               f"use another out=")
    finished = state is not None and state["step"] == cfg.steps and (out / "train_meta.json").is_file() \
        and json.loads((out / "train_meta.json").read_text()).get("steps") == state["step"]
    # steps= below the state's step: export the state as it is (e.g. a run still training), recording its own
    # config, schedule and data history, not this command's
    export_only = state is not None and state["step"] > cfg.steps
    if export_only:
        print(f"{state_path} is at step {state['step']}, past steps={cfg.steps}: exporting it without training",
              file=sys.stderr)
    if cfg.autocast == "bfloat16" and not (finished or export_only):
        warn_if_bf16_is_slow("autocast=bfloat16")
    data_hashes = (state or {}).get("data_manifest_hashes", [])
    if manifest_hash not in data_hashes and not (finished or export_only):
        if data_hashes:
            print(f"the data changed since {state_path} was written ({data_hashes[-1]} -> {manifest_hash}): "
                  f"training continues on the new data", file=sys.stderr)
        data_hashes = [*data_hashes, manifest_hash]
    if state is not None and "vocab" in state:  # None: a full-vocabulary run stays one
        vocab = state["vocab"]  # a resumed run keeps the drafting vocabulary its head was trained over
    else:
        vocab = top_tokens(rows, cfg.reduced_vocab, pair.eos_token_ids) if cfg.reduced_vocab else None
    recipe = RECIPES[cfg.recipe](cfg, pair.target, vocab)
    module = recipe.module
    trainable = [p for p in module.parameters() if p.requires_grad]
    # not trained, so left out of state.pt and rebuilt on load: the target's tensors, or init_from's under
    # train_only_cross_attention
    frozen = {name for name, p in module.named_parameters() if not p.requires_grad}
    optimiser = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    out.mkdir(parents=True, exist_ok=True)
    if state is not None:
        missing, unexpected = module.load_state_dict(state["draft"], strict=False)  # frozen tensors are not saved
        trained_missing = [k for k in missing if k not in frozen]
        if unexpected or trained_missing:
            raise SvbenchError(f"{state_path} does not fit this model: missing {trained_missing[:3]}, unexpected "
                               f"{unexpected[:3]}; use another out=")
        optimiser.load_state_dict(state["optimiser"])
        step = state["step"]
        elapsed = state.get("elapsed_s", 0.0)
        random.setstate(state["python_rng"])
        torch.set_rng_state(state["torch_rng"])
        print(f"resumed from {state_path} at step {step}", file=sys.stderr)
    else:
        random.seed(cfg.seed)
    # the cosine's length over the run's history: [{"from_step", "steps"}], one entry per change of steps=
    schedule = (state or {}).get("schedule") or []
    if state is not None and not schedule:  # a state written before the history was kept
        schedule = [{"from_step": 0, "steps": state["config"]["steps"]}]
    if schedule and schedule[-1]["steps"] != cfg.steps and not export_only:
        print(f"steps changed {schedule[-1]['steps']} -> {cfg.steps} at step {step}: the cosine is re-stretched, "
              f"lr {lr_at(step, cfg, schedule[-1]['steps']):.3g} -> {lr_at(step, cfg):.3g}", file=sys.stderr)
    if (not schedule or schedule[-1]["steps"] != cfg.steps) and not export_only:
        schedule = [*schedule, {"from_step": step, "steps": cfg.steps}]
    pad = pair.tokenizer.pad_token_id or 0
    coverage = None
    if vocab is not None:
        vocab_set = set(vocab)
        answer_tokens = [t for r in rows for t in r["ids"][r["prompt_len"]:]]
        coverage = sum(t in vocab_set for t in answer_tokens) / len(answer_tokens)
        print(f"reduced vocabulary: {len(vocab)} tokens cover {coverage:.4f} of answer tokens", file=sys.stderr)
    def save():
        trainable_state = {k: v for k, v in module.state_dict().items() if k not in frozen}
        tmp = state_path.with_suffix(".tmp")
        torch.save({"draft": trainable_state, "optimiser": optimiser.state_dict(), "step": step,
                    "elapsed_s": elapsed + time.perf_counter() - start,
                    "python_rng": random.getstate(), "torch_rng": torch.get_rng_state(),
                    "config": OmegaConf.to_container(cfg), "vocab": vocab, "data_manifest_hashes": data_hashes,
                    "schedule": schedule, "ema": (ema_loss, ema_acc), "pending_batches": pending,
                    "pending_drawn_with": drawn_with}, tmp)
        tmp.replace(state_path)

    module.train()
    bar = tqdm(total=cfg.steps, initial=step, desc=f"train {cfg.recipe}", unit="step", file=sys.stderr)
    # the EMAs go into state.pt, so a resumed (or re-run finished) run reports the same final EMAs as an uninterrupted one
    ema_loss, ema_acc = (state or {}).get("ema", (None, None))
    tokens, start = 0, time.perf_counter()
    empty_batches = 0
    # batches drawn, not yet trained on (length_group > 1): row indices, so kept only on the data and with the
    # batch settings they were drawn with
    drawn_with = {"data": manifest_hash, "batch_size": cfg.batch_size, "length_group": cfg.length_group}
    if weights is not None:  # (absent when unweighted: the saves of runs before source_weights stay valid)
        drawn_with["source_weights"] = dict(sorted(source_weights.items()))
    pending = list(state.get("pending_batches", [])) \
        if state is not None and state.get("pending_drawn_with") == drawn_with else []
    while step < cfg.steps:
        if not pending:
            pending = draw_batches(rows, cfg.batch_size, cfg.length_group, weights)
        batch = pending.pop()
        done = train_step(recipe, optimiser, trainable, rows, batch, cfg, pad, lr_at(step, cfg))
        if done is None:  # only empty answers in this batch: nothing to learn from it
            empty_batches += 1
            if empty_batches > 100:
                raise SvbenchError("100 batches in a row had no answer tokens: the data's answers are empty")
            continue
        empty_batches = 0
        loss_value, acc, n_tokens, _ = done
        step += 1
        ema_loss = loss_value if ema_loss is None else 0.98 * ema_loss + 0.02 * loss_value
        ema_acc = acc if ema_acc is None else 0.98 * ema_acc + 0.02 * acc
        tokens += n_tokens
        bar.update(1)
        bar.set_postfix(loss=f"{ema_loss:.3f}", top1=f"{ema_acc:.3f}", tok_s=f"{tokens / (time.perf_counter() - start):.0f}")
        if step % cfg.save_every == 0 or step == cfg.steps:
            save()
    bar.close()
    if finished:  # a re-run of a finished run trains nothing: it re-exports with the run's own metadata
        meta = json.loads((out / "train_meta.json").read_text())
        print(f"{state_path} is finished (step {step}): re-exporting it with {out / 'train_meta.json'}", file=sys.stderr)
    else:
        command = " ".join(["python -m svbench.train", *sys.argv[1:]])
        meta = {"recipe": cfg.recipe, "steps": step, "command": command,
                "config": state["config"] if export_only else OmegaConf.to_container(cfg),
                "data_manifest_hash": data_hashes[-1] if data_hashes else manifest_hash,
                "data_manifest_hashes": data_hashes, "schedule": schedule, "train_rows": len(rows),
                "train_answer_tokens": sum(len(r["ids"]) - r["prompt_len"] for r in rows),
                "vocab_size": len(vocab) if vocab else pair.target.config.vocab_size, "vocab_coverage": coverage,
                "final_train_loss_ema": ema_loss, "final_train_top1_ema": ema_acc,
                "wall_hours": round((elapsed + time.perf_counter() - start) / 3600, 2),
                "threads": torch.get_num_threads()}
        if export_only:  # the training run's own train_meta.json (written at its end) is left alone
            meta["command"] = f"{command}  (an export of {state_path} at step {step}, written by a run with steps=" \
                              f"{state['config']['steps']})"
    if not export_only:
        (out / "train_meta.json.tmp").write_text(json.dumps(meta, indent=2))
        (out / "train_meta.json.tmp").replace(out / "train_meta.json")
    if cfg.export:
        export = Path(cfg.export)
        recipe.export(export)  # removes the previous draft's card, eval and vocabulary (svbench.draft_folder)
        (export / "train_meta.json").write_text(json.dumps(meta, indent=2))
        print(f"draft written to {export}", file=sys.stderr)


@hydra.main(version_base="1.3", config_path=str(REPO / "conf" / "train"), config_name="draft_lm")
def main(cfg) -> None:
    report_user_errors(train, cfg)


if __name__ == "__main__":
    main()
