"""Seconds per training step of svbench.train's loop, for several versions of the code side by side: each
version runs as its own process on the same batches (same seed), the versions alternate round by round
(ABCABC...), and every step is paired across versions.

    python experiments/train_step_speed.py --code NAME=DIR [--code NAME=DIR ...] [--rounds 3] [--steps 8]
        [--warmup 2] [--config eagle] [--override key=value ...] [--out results/train_step_speed]

DIR: a checkout whose svbench package is imported (e.g. `git worktree add /tmp/base HEAD~1`); `.` is this
one. NAME=DIR:heap runs that code without svbench.train's keep_freed_memory (glibc's default heap). The
default overrides are the masked EAGLE chain's (experiments/eagle_mask_chain.sh): all the data, seq_len 512,
ttt_steps 3, mask_outside_vocab. A step here is the loop's: a fresh batch (so the target's pass is computed,
as in a first epoch), loss, backward, clip, AdamW. Writes OUT.json and OUT.md; run nothing else meanwhile.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHAIN = ["data=[train_data/smollm2,train_data/smollm2_fixed]", "seq_len=512", "ttt_steps=3", "mask_outside_vocab=true"]


def worker(args) -> None:
    """One version's steps (this process imports svbench from PYTHONPATH): prints one JSON line."""
    import torch
    from hydra import compose, initialize_config_dir

    import svbench.train.__main__ as train_main
    from svbench.config import group_config
    from svbench.models import load_pair
    from svbench.train.data import read_shards
    from svbench.train.recipes import RECIPES

    heap = os.environ.get("SVBENCH_STEP_HEAP") == "default"
    if not heap and hasattr(train_main, "keep_freed_memory"):
        train_main.keep_freed_memory()
    with initialize_config_dir(config_dir=str(REPO / "conf" / "train"), version_base="1.3"):
        cfg = compose(config_name=args.config, overrides=args.override)
    torch.manual_seed(cfg.seed)
    pair = load_pair(group_config("pair", cfg.pair), "float32", "cpu", drafter_cls=None)
    data = [cfg.data] if isinstance(cfg.data, str) else list(cfg.data)
    rows = [r for folder in data for r in read_shards(REPO / folder, split="train")]
    vocab = train_main.top_tokens(rows, cfg.reduced_vocab, pair.eos_token_ids) if cfg.reduced_vocab else None
    recipe = RECIPES[cfg.recipe](cfg, pair.target, vocab)
    trainable = [p for p in recipe.module.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(trainable, lr=cfg.lr)
    recipe.module.train()
    random.seed(cfg.seed)
    pad = pair.tokenizer.pad_token_id or 0
    seconds = []
    for step in range(args.warmup + args.steps):
        batch = random.sample(range(len(rows)), cfg.batch_size)
        start = time.perf_counter()
        ids, attention, answer = train_main.make_batch([rows[i] for i in batch], cfg.seq_len, pad)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, _, _ = recipe.loss(ids, attention, answer, keys=batch)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
        optimiser.step()
        if step >= args.warmup:
            seconds.append(time.perf_counter() - start)
    print(json.dumps({"seconds": seconds, "threads": torch.get_num_threads()}))


def bootstrap_ci(values: list[float], n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the median."""
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(n))
    return medians[int(0.025 * n)], medians[int(0.975 * n) - 1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--code", action="append", default=[], help="NAME=DIR[:heap], two or more")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--config", default="eagle")
    ap.add_argument("--override", action="append", default=None, help="a training key=value (default: the chain's)")
    ap.add_argument("--out", default=str(REPO / "results" / "train_step_speed"))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.override = CHAIN if args.override is None else args.override
    if args.worker:
        return worker(args)
    versions = {}
    for spec in args.code:
        name, sep, where = spec.partition("=")
        folder, _, mode = where.partition(":")
        if not sep or not name or not (Path(folder) / "svbench" / "__init__.py").is_file() or mode not in ("", "heap"):
            sys.exit(f"--code {spec!r}: expected NAME=DIR[:heap] with DIR holding svbench/")
        versions[name] = (str(Path(folder).resolve()), mode)
    if len(versions) < 2 or min(args.rounds, args.steps) < 1:
        sys.exit("give two or more --code versions, --rounds and --steps >= 1")
    steps = {name: [] for name in versions}  # per version: seconds of step k of round r, in order
    for r in range(args.rounds):
        for name, (folder, mode) in versions.items():
            env = {**os.environ, "PYTHONPATH": folder, "SVBENCH_STEP_HEAP": "default" if mode == "heap" else ""}
            cmd = [sys.executable, __file__, "--worker", "--steps", str(args.steps), "--warmup", str(args.warmup),
                   "--config", args.config] + [f"--override={o}" for o in args.override]
            done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"{name} (round {r + 1}) failed: {done.stderr.strip().splitlines()[-1]}")
            seconds = json.loads(done.stdout.strip().splitlines()[-1])["seconds"]
            steps[name].extend(seconds)
            print(f"round {r + 1} {name}: median {statistics.median(seconds):.2f} s/step", file=sys.stderr)
    base = next(iter(versions))
    rows = []
    for name in versions:
        ratios = [b / s for b, s in zip(steps[base], steps[name])]  # the same batch, base time / this time
        lo, hi = bootstrap_ci(ratios)
        rows.append({"version": name, "code": versions[name][0], "heap": versions[name][1] or "kept",
                     "median_s": statistics.median(steps[name]), "speedup_vs_base": statistics.median(ratios),
                     "ci95": [lo, hi], "steps": len(steps[name]), "seconds": steps[name]})
    from svbench.environment import write_result
    command = "python experiments/train_step_speed.py " + " ".join(sys.argv[1:])
    lines = [f"# Training step time ({args.config}; {', '.join(args.override)})", "",
             f"`{command}`: {args.rounds} rounds x {args.steps} steps (after {args.warmup} warm-up) per version, "
             f"versions alternating, the same batches in every version.", "",
             f"| version | heap | median s/step | speedup vs {base} (median of paired steps) | 95% CI |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['version']} | {r['heap']} | {r['median_s']:.2f} | {r['speedup_vs_base']:.2f}x | "
              f"[{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}] |" for r in rows]
    write_result(args.out, lines, command, rows)


if __name__ == "__main__":
    main()
