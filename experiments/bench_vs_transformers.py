"""svbench AR / vanilla SD / PLD vs transformers `generate` (plain, assisted, prompt lookup), side by side.

    python experiments/bench_vs_transformers.py [--pair smollm2_layercut] [--dtype bfloat16]
        [--max-new-tokens 128] [--prompts 8] [--out results/bench_vs_transformers]
    python experiments/bench_vs_transformers.py --suite pld --per-category 4 --dtype float32 \
        --out results/pld_vs_transformers_fp32

--suite sd: svbench AR, vanilla SD (fixed, svip) and transformers' assisted generation with the same draft.
--suite pld: svbench AR, svbench PLD (latest and first occurrence) and transformers' prompt lookup
(prompt_lookup_num_tokens = --gamma, max_matching_ngram_size = --max-ngram) on Spec-Bench first turns
(--per-category of each category; summarization and RAG are where copying pays).

Every prompt runs every method once, in a rotating order (so slow drift of a shared machine hits all
methods alike); per-prompt tokens/s are compared and medians reported. Greedy decoding, batch size 1.
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

from svbench.benchmarks import build_prompt, load_benchmark  # noqa: E402
from svbench.config import group_config  # noqa: E402
from svbench.decoding.drafters.draft_model import DraftModelDrafter  # noqa: E402
from svbench.decoding.drafters.pld import PromptLookupDrafter  # noqa: E402
from svbench.decoding.loop import generate  # noqa: E402
from svbench.decoding.policies import FixedPolicy, SVIPPolicy  # noqa: E402
from svbench.environment import environment  # noqa: E402
from svbench.models import load_pair  # noqa: E402


def prompts_for(tokenizer, n: int, per_category: int | None = None) -> list[list[int]]:
    """n prompts: smoke + 2 Spec-Bench first turns per category; or, with per_category, that many Spec-Bench
    first turns of each category (all of them, n ignored)."""
    spec = group_config("benchmark", "spec_bench")
    if per_category:
        questions = load_benchmark({**spec, "limit": per_category, "turns": "first"})
        return [build_prompt(tokenizer, "chat", [q.turns[0]], []) for q in questions]
    questions = list(load_benchmark({"name": "smoke", "path": None, "file": None}))
    questions += load_benchmark({**spec, "limit": 2, "turns": "first"})
    return [build_prompt(tokenizer, "chat", [q.turns[0]], []) for q in questions[:n]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pair", default="smollm2")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--gamma", type=int, default=5, help="draft length (pld suite: tokens copied per round)")
    ap.add_argument("--suite", choices=["sd", "pld"], default="sd")
    ap.add_argument("--max-ngram", type=int, default=3, help="pld suite: longest n-gram matched")
    ap.add_argument("--per-category", type=int, default=None, help="Spec-Bench first turns per category")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=str(REPO / "results" / "bench_vs_transformers"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    pair_cfg = group_config("pair", args.pair)
    pair = load_pair(pair_cfg, args.dtype, "cpu", drafter_cls=DraftModelDrafter if args.suite == "sd" else None)
    target, draft, eos = pair.target, pair.network, pair.eos_token_ids
    prompts = prompts_for(pair.tokenizer, args.prompts, args.per_category)
    n_new = args.max_new_tokens
    if draft is not None:
        draft.generation_config.num_assistant_tokens = args.gamma
        draft.generation_config.num_assistant_tokens_schedule = "constant"
        draft.generation_config.assistant_confidence_threshold = 0.0  # a fixed-length draft, like svbench fixed

    def hf(prompt, assisted: bool = False, lookup: bool = False):
        ids = torch.tensor([prompt])
        kwargs = {"assistant_model": draft} if assisted else {}
        if lookup:
            kwargs = {"prompt_lookup_num_tokens": args.gamma, "max_matching_ngram_size": args.max_ngram}
        start = time.perf_counter()
        with torch.inference_mode():
            out = target.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n_new, do_sample=False,
                                  eos_token_id=list(eos), pad_token_id=eos[0], **kwargs)
        return out[0, len(prompt):].tolist(), time.perf_counter() - start, None

    def ours(prompt, policy, vocab=pair.vocab_subset, drafter=None):
        if drafter is None and policy is not None:
            drafter = DraftModelDrafter(draft, vocab)
        gen = generate(target, prompt, n_new, drafter, policy, eos_ids=eos)
        tau = statistics.fmean(r.accepted + 1 for r in gen.rounds)
        return gen.ids, gen.wall_time, tau

    if args.suite == "sd":
        methods = {
            "svbench AR": lambda p: ours(p, None),
            f"svbench SD fixed(γ={args.gamma})": lambda p: ours(p, FixedPolicy(args.gamma)),
            "svbench SD svip": lambda p: ours(p, SVIPPolicy()),
            **({f"svbench SD fixed(γ={args.gamma}), full vocab": lambda p: ours(p, FixedPolicy(args.gamma), None)}
               if pair.vocab_subset else {}),
            "transformers generate": lambda p: hf(p),
            f"transformers assisted (γ={args.gamma})": lambda p: hf(p, assisted=True),
        }
    else:
        def pld(match):
            return PromptLookupDrafter(max_ngram=args.max_ngram, num_tokens=args.gamma, match=match)

        methods = {
            "svbench AR": lambda p: ours(p, None),
            f"svbench PLD fixed({args.gamma}), latest": lambda p: ours(p, FixedPolicy(args.gamma), drafter=pld("latest")),
            f"svbench PLD fixed({args.gamma}), first": lambda p: ours(p, FixedPolicy(args.gamma), drafter=pld("first")),
            "transformers generate": lambda p: hf(p),
            f"transformers prompt lookup ({args.gamma})": lambda p: hf(p, lookup=True),
        }
    names = list(methods)
    for name in names:  # warm-up, untimed
        methods[name](prompts[0][:32])
    speeds = {n: [] for n in names}
    taus = {n: [] for n in names}
    ids = {n: [] for n in names}
    for i, prompt in enumerate(prompts):
        order = names[i % len(names):] + names[: i % len(names)]
        for name in order:
            out, seconds, tau = methods[name](prompt)
            speeds[name].append(len(out) / seconds)
            ids[name].append(out)
            if tau is not None:
                taus[name].append(tau)
            print(f"prompt {i}: {name:34s} {len(out):4d} tok {len(out) / seconds:7.2f} tok/s", file=sys.stderr)

    ar_name, hf_name = "svbench AR", "transformers generate"
    rows = []
    for name in names:
        ratio_ar = statistics.median(s / a for s, a in zip(speeds[name], speeds[ar_name]))
        ratio_hf = statistics.median(s / a for s, a in zip(speeds[name], speeds[hf_name]))
        same = sum(a == b for a, b in zip(ids[name], ids[ar_name]))
        rows.append({"method": name, "median_tokens_per_s": statistics.median(speeds[name]),
                     "median_speedup_vs_svbench_ar": ratio_ar, "median_speedup_vs_hf_generate": ratio_hf,
                     "tau": statistics.fmean(taus[name]) if taus[name] else None,
                     "ids_equal_to_svbench_ar": f"{same}/{len(prompts)}"})
    if args.suite == "sd":
        theirs = f"transformers assisted (γ={args.gamma})"
        fixed = f"svbench SD fixed(γ={args.gamma})"
        if pair.vocab_subset:  # the like-for-like comparison: the same draft head as transformers uses
            fixed += ", full vocab"
    else:  # like for like: the same occurrence rule as transformers
        theirs, fixed = f"transformers prompt lookup ({args.gamma})", f"svbench PLD fixed({args.gamma}), first"
    sd_vs_assisted = statistics.median(s / a for s, a in zip(speeds[fixed], speeds[theirs]))
    env = environment("cpu")
    command = "python " + " ".join([f"experiments/{Path(__file__).name}"] + sys.argv[1:])
    lines = [f"# svbench vs transformers generate — {args.pair}, {args.dtype}, CPU",
             "", f"Command: `{command}`", "",
             f"{len(prompts)} prompts ({'Spec-Bench first turns, ' + str(args.per_category) + ' per category' if args.per_category else 'smoke + Spec-Bench first turns'}), greedy, max_new_tokens={n_new}, batch 1, "
             f"torch threads {torch.get_num_threads()}. Ratios are medians of per-prompt ratios measured side by side.",
             "", "| method | median tok/s | vs svbench AR | vs transformers generate | tau | ids == svbench AR |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        tau = f"{r['tau']:.2f}" if r["tau"] else "-"
        lines.append(f"| {r['method']} | {r['median_tokens_per_s']:.2f} | {r['median_speedup_vs_svbench_ar']:.3f} "
                     f"| {r['median_speedup_vs_hf_generate']:.3f} | {tau} | {r['ids_equal_to_svbench_ar']} |")
    lines += ["", f"{fixed} vs {theirs} (like for like): median per-prompt ratio {sd_vs_assisted:.3f}",
              "", "Environment: `" + json.dumps(env) + "`", ""]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text("\n".join(lines))
    out.with_suffix(".json").write_text(json.dumps({"command": command, "rows": rows, "speeds": speeds,
                                                    "sd_fixed_vs_assisted": sd_vs_assisted, "env": env}, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
