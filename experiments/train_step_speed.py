"""Seconds per training step of svbench.train's loop, for several versions of the code side by side: each
version runs as its own process on the same batches (same seed), the versions alternate round by round
(ABCABC...), and every step is paired across versions.

    python experiments/train_step_speed.py --code NAME=DIR [--code NAME=DIR ...] [--rounds 3] [--steps 8]
        [--warmup 2] [--config eagle] [--override key=value ...] [--version-override NAME=key=value ...]
        [--out results/train_step_speed]

DIR: a checkout whose svbench package is imported (e.g. `git worktree add /tmp/base 97a8bea`); `.` is this one
(every version reads this checkout's conf/ and data). Its svbench.train must have train_step (session 28 on); older
code was timed by the session 27 version of this script (`git show 5963aac:experiments/train_step_speed.py`). A
version runs with svbench.train's keep_freed_memory (the table says whether it took effect);
NAME=DIR:heap keeps glibc's default heap, which is the training loop's default (keep_freed_memory=false) since the
kept heap was found to grow in long runs; the key itself is not an --override here. The default overrides are the
masked EAGLE chain's (experiments/eagle_mask_chain.sh): all the data, seq_len 512, ttt_steps 3, mask_outside_vocab;
--version-override adds one for one version (e.g. length_group=16). A step here is the loop's (svbench.train's
draw_batches, then train_step: loss, backward, clip, AdamW), so the target's pass is computed as in a first epoch;
a batch without answer tokens is skipped, so a version may time fewer than --steps steps. Steps are paired across
versions (same batches) only where the versions draw the same batches; the table also gives seconds per 1,000 real
(unpadded) tokens. Writes OUT.json and OUT.md; run nothing else meanwhile.
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

    if not hasattr(train_main, "train_step"):
        sys.exit("this version's svbench.train has no train_step (added in session 28): time older code with the "
                 "session 27 version of this script (git show 5963aac:experiments/train_step_speed.py)")
    kept = os.environ.get("SVBENCH_STEP_HEAP") != "default" and train_main.keep_freed_memory()
    with initialize_config_dir(config_dir=str(REPO / "conf" / "train"), version_base="1.3"):
        cfg = compose(config_name=args.config, overrides=args.override)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    pair = load_pair(group_config("pair", cfg.pair), "float32", "cpu", drafter_cls=None)
    data = [cfg.data] if isinstance(cfg.data, str) else list(cfg.data)
    rows = [r for folder in data for r in read_shards(REPO / folder, split="train")]
    vocab = train_main.top_tokens(rows, cfg.reduced_vocab, pair.eos_token_ids) if cfg.reduced_vocab else None
    recipe = RECIPES[cfg.recipe](cfg, pair.target, vocab)
    trainable = [p for p in recipe.module.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    recipe.module.train()
    random.seed(cfg.seed)
    pad = pair.tokenizer.pad_token_id or 0
    seconds, real, padded, drawn, pending = [], [], 0, [], []
    for step in range(args.warmup + args.steps):
        if not pending:
            pending = train_main.draw_batches(rows, cfg.batch_size, cfg.length_group)
        batch = pending.pop()
        start = time.perf_counter()
        done = train_main.train_step(recipe, optimiser, trainable, rows, batch, cfg, pad, cfg.lr)
        if step >= args.warmup and done is not None:
            seconds.append(time.perf_counter() - start)
            real.append(int(done[3].sum()))
            padded += done[3].numel()
            drawn.append(sorted(batch))
    print(json.dumps({"seconds": seconds, "real_tokens": real, "padded_tokens": padded, "batches": drawn,
                      "kept_freed_memory": kept}))


def bootstrap_ci(values: list[float], n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the median."""
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(n))
    return medians[int(0.025 * n)], medians[int(0.975 * n) - 1]


def rate_ratio_ci(base: list[tuple[float, int]], other: list[tuple[float, int]], n: int = 2000,
                  seed: int = 0) -> tuple[float, float, float]:
    """(seconds per real token of base) / (that of other), steps (seconds, real tokens) resampled within each
    version (unpaired): the ratio and its 95% percentile-bootstrap interval."""
    def rate(steps):
        return sum(s for s, _ in steps) / sum(t for _, t in steps)
    rng = random.Random(seed)
    ratios = sorted(rate(rng.choices(base, k=len(base))) / rate(rng.choices(other, k=len(other))) for _ in range(n))
    return rate(base) / rate(other), ratios[int(0.025 * n)], ratios[int(0.975 * n) - 1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--code", action="append", default=[], help="NAME=DIR[:heap], two or more")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--config", default="eagle")
    ap.add_argument("--override", action="append", default=None, help="a training key=value (default: the chain's)")
    ap.add_argument("--version-override", action="append", default=[], help="NAME=key=value: for one version")
    ap.add_argument("--out", default=str(REPO / "results" / "train_step_speed"))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.override = CHAIN if args.override is None else args.override
    if any(o.startswith("keep_freed_memory=") for o in args.override + [v.partition("=")[2] for v in
                                                                          args.version_override]):
        sys.exit("keep_freed_memory is not an override here: a version keeps the heap unless given as NAME=DIR:heap")
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
    extra = {name: [] for name in versions}
    for spec in args.version_override:
        name, sep, override = spec.partition("=")
        if name not in versions or "=" not in override:
            sys.exit(f"--version-override {spec!r}: expected NAME=key=value with NAME one of {sorted(versions)}")
        extra[name].append(override)
    steps = {name: [] for name in versions}  # per version: seconds of step k of round r, in order
    real = {name: [] for name in versions}  # per step
    padded = {name: 0 for name in versions}
    kept, batches = {}, {name: [] for name in versions}
    for r in range(args.rounds):
        for name, (folder, mode) in versions.items():
            env = {**os.environ, "PYTHONPATH": folder, "SVBENCH_STEP_HEAP": "default" if mode == "heap" else ""}
            cmd = [sys.executable, __file__, "--worker", "--steps", str(args.steps), "--warmup", str(args.warmup),
                   "--config", args.config] + [f"--override={o}" for o in args.override + extra[name]]
            done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
                sys.exit(f"{name} (round {r + 1}) failed: {last}")
            out = json.loads(done.stdout.strip().splitlines()[-1])
            steps[name].extend(out["seconds"])
            real[name].extend(out["real_tokens"])
            padded[name] += out["padded_tokens"]
            batches[name].extend(out["batches"])
            kept[name] = out["kept_freed_memory"]
            print(f"round {r + 1} {name}: median {statistics.median(out['seconds']):.2f} s/step", file=sys.stderr)
    base = next(iter(versions))
    rows = []
    for name in versions:
        paired = batches[name] == batches[base]  # the same batches: step k's times are comparable
        ratios = [b / s for b, s in zip(steps[base], steps[name])]  # base time / this time, per step
        rate = rate_ratio_ci(list(zip(steps[base], real[base])), list(zip(steps[name], real[name])))
        rows.append({"version": name, "code": versions[name][0], "overrides": extra[name],
                     "heap": "kept" if kept[name] else "glibc default", "median_s": statistics.median(steps[name]),
                     "paired_speedup_vs_base": statistics.median(ratios) if paired else None,
                     "paired_ci95": list(bootstrap_ci(ratios)) if paired else None,
                     "token_rate_speedup_vs_base": rate[0], "token_rate_ci95": list(rate[1:]),
                     "steps": len(steps[name]), "real_token_fraction": sum(real[name]) / padded[name],
                     "s_per_1k_real_tokens": 1000 * sum(steps[name]) / sum(real[name]), "seconds": steps[name],
                     "real_tokens": real[name]})
    from svbench.environment import write_result
    command = "python experiments/train_step_speed.py " + " ".join(sys.argv[1:])
    lines = [f"# Training step time ({args.config}; {', '.join(args.override)})", "",
             f"`{command}`: {args.rounds} rounds x {args.steps} steps (after {args.warmup} warm-up) per version, "
             f"versions alternating; versions that draw the same batches are paired step by step.", "",
             f"| version | overrides | heap | median s/step | speedup vs {base}, paired steps (median, 95% CI) | "
             f"real tokens / padded batch | s per 1,000 real tokens | speedup vs {base} in real tokens/s (95% CI) |",
             "|---|---|---|---|---|---|---|---|"]

    def paired(r):
        if r["paired_speedup_vs_base"] is None:
            return "— (other batches)"
        return f"{r['paired_speedup_vs_base']:.2f}x [{r['paired_ci95'][0]:.2f}, {r['paired_ci95'][1]:.2f}]"
    lines += [f"| {r['version']} | {' '.join(r['overrides']) or '—'} | {r['heap']} | {r['median_s']:.2f} | "
              f"{paired(r)} | {r['real_token_fraction']:.3f} | {r['s_per_1k_real_tokens']:.3f} | "
              f"{r['token_rate_speedup_vs_base']:.2f}x [{r['token_rate_ci95'][0]:.2f}, {r['token_rate_ci95'][1]:.2f}] |"
              for r in rows]
    write_result(args.out, lines, command, rows)


if __name__ == "__main__":
    main()
