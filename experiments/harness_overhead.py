"""Harness overhead on the real pair: per round, the time that is neither a target forward nor a draft
network forward (tree building, verification, cache compaction, policy, bookkeeping), as a share of the
round. Issue 13's goal: <= 3% for every method.

    python experiments/harness_overhead.py [--questions 6] [--tokens 128] [--out results/harness_overhead_smollm2]

Instrumentation (one run per method, svip, greedy, bf16, 2 threads, the first turn of the first Spec-Bench
question of each category): TargetRunner.forward_tree is timed whole (model + lm_head); the draft
network's forward is a chain drafter's ``_forward`` (network + reduced-vocabulary lm_head rows) or an
EAGLE head's ``forward`` and ``logits``. Everything else a round spends is the harness's. On a CPU no synchronisation is needed; on a
GPU the same script would have to synchronise at each hook, which the loop's clock() does for rounds only.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hydra import compose, initialize_config_dir  # noqa: E402

from svbench.benchmarks import build_prompt, load_benchmark  # noqa: E402
from svbench.config import build_drafter, build_policy, group_config, validate  # noqa: E402
from svbench.decoding.drafters import drafter_class  # noqa: E402
from svbench.decoding.loop import generate  # noqa: E402
from svbench.decoding.target import TargetRunner  # noqa: E402
from svbench.environment import write_result  # noqa: E402
from svbench.models import load_pair  # noqa: E402

METHODS = ("vanilla_sd", "glide", "glide_cape", "eagle2_cpu", "eagle2", "eagle3_cpu")


class Stopwatch:
    """Wraps callables and adds their wall time to .seconds (nested calls are counted once)."""

    def __init__(self):
        self.seconds, self.depth = 0.0, 0

    def wrap(self, fn):
        def timed(*args, **kwargs):
            start, self.depth = time.perf_counter(), self.depth + 1
            try:
                return fn(*args, **kwargs)
            finally:
                self.depth -= 1
                if self.depth == 0:
                    self.seconds += time.perf_counter() - start
        return timed


def measure(method: str, overrides: list[str], prompts: list[list[int]], tokens: int) -> dict:
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        c = validate(compose(config_name="config", overrides=[f"method={method}", "policy=svip", "pair=smollm2",
                                                              "dtype=bfloat16", *overrides]))
    pair = load_pair(c["pair"], "bfloat16", "cpu", drafter_cls=drafter_class(c["method"]))
    drafter, policy = build_drafter(c, pair), build_policy(c)
    target_watch, draft_watch = Stopwatch(), Stopwatch()
    original = TargetRunner.forward_tree
    TargetRunner.forward_tree = target_watch.wrap(original)
    # the draft network's forward: a chain drafter's _forward (the network + its reduced-vocabulary lm_head
    # rows), an EAGLE head's forward and logits
    timed = [(drafter, "_forward")] if hasattr(drafter, "_forward") else [(pair.network, "forward"),
                                                                          (pair.network, "logits")]
    for owner, name in timed:
        setattr(owner, name, draft_watch.wrap(getattr(owner, name)))
    rows = []
    try:
        generate(pair.target, prompts[0], 16, drafter, policy, eos_ids=())  # warm-up
        for prompt in prompts:
            target_watch.seconds = draft_watch.seconds = 0.0
            out = generate(pair.target, prompt, tokens, drafter, policy, eos_ids=())
            rounds = out.rounds[1:]  # the drafting rounds (the prefill's round has no draft)
            round_s = sum(r.draft_s + r.verify_s for r in rounds)
            # the prefill runs the draft network too (catch-up happens in round 1): all its time is in rounds
            rows.append({"rounds": len(rounds), "round_ms": 1e3 * round_s / len(rounds),
                         "target_ms": 1e3 * target_watch.seconds / len(rounds),
                         "draft_net_ms": 1e3 * draft_watch.seconds / len(rounds),
                         "tau": sum(r.accepted + 1 for r in rounds) / len(rounds)})
    finally:
        TargetRunner.forward_tree = original
        for owner, name in timed:
            delattr(owner, name)  # the instance attribute goes; the class's method is back
    for r in rows:
        r["other_ms"] = r["round_ms"] - r["target_ms"] - r["draft_net_ms"]
        r["other_share"] = r["other_ms"] / r["round_ms"]
    med = {k: statistics.median(r[k] for r in rows) for k in ("round_ms", "target_ms", "draft_net_ms", "other_ms",
                                                               "other_share", "tau")}
    return {"method": method, "overrides": overrides, "prompts": len(rows), **med,
            "other_share_max": max(r["other_share"] for r in rows), "per_prompt": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--questions", type=int, default=6, help="first turns: the first question of each category")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--override", action="append", default=[], help="METHOD:hydra.key=value (repeatable)")
    ap.add_argument("--out", default=str(REPO / "results" / "harness_overhead_smollm2"))
    args = ap.parse_args()
    bad = [o for o in args.override if ":" not in o or o.split(":", 1)[0] not in args.methods]
    if bad:
        ap.error(f"--override {bad[0]!r}: expected METHOD:key=value with METHOD one of {args.methods}")
    torch.set_num_threads(2)
    spec = group_config("benchmark", "spec_bench")
    questions = load_benchmark({**spec, "limit": 1, "turns": "first"})[: args.questions]
    tokenizer = load_pair(group_config("pair", "smollm2"), "bfloat16", "cpu").tokenizer
    prompts = [build_prompt(tokenizer, "chat", [q.turns[0]], []) for q in questions]
    rows = []
    for method in args.methods:
        extra = [o.split(":", 1)[1] for o in args.override if o.split(":", 1)[0] == method]
        rows.append(measure(method, extra, prompts, args.tokens))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "per_prompt"}), file=sys.stderr)
    command = "python experiments/harness_overhead.py " + " ".join(sys.argv[1:])
    lines = ["# Harness overhead per round, SmolLM2-135M pair, CPU bf16, svip, greedy", "",
             f"Command: `{command.strip()}`. {len(prompts)} Spec-Bench first turns x {args.tokens} new tokens, EOS "
             "ignored, 2 threads; medians over prompts. `other` = round time - target forward (TargetRunner."
             "forward_tree, lm_head included) - draft network forward (its forward and its lm_head rows): tree "
             "building, verification, cache compaction, policy and bookkeeping. Goal (issue 13): <= 3%.", "",
             "| method | overrides | round ms | target ms | draft net ms | other ms | other % (median) | other % (max) | tau |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {' '.join(r['overrides']) or '-'} | {r['round_ms']:.1f} | {r['target_ms']:.1f} | "
                     f"{r['draft_net_ms']:.1f} | {r['other_ms']:.2f} | {100 * r['other_share']:.1f} | "
                     f"{100 * r['other_share_max']:.1f} | {r['tau']:.2f} |")
    write_result(args.out, lines, command, rows)


if __name__ == "__main__":
    main()
