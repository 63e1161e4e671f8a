"""The GPU check: every method x {fixed, svip} on a random-weight Llama (~1B parameters with --size 1b) with a
random draft (the target's first 2 layers), a fresh GliDe draft and a fresh EAGLE head, in float16 and
bfloat16, on one device. Per configuration: ids vs AR (exact / near-tie / mismatch, svbench.decoding.agreement),
speedup, the per-round time split (target forward, draft, everything else) and host-device syncs per round.
Writes OUT.json and OUT.md. Run through experiments/gpu_check.sh; on a CPU: --device cpu --size tiny.

    python experiments/gpu_check.py --device cuda --size 1b --out results/gpu/gpu_check_cuda
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from svbench.decoding.agreement import TIE_BOUND, agreement  # noqa: E402
from svbench.decoding.drafters.draft_model import OFFICIAL_CAPE_BINS, DraftModelDrafter  # noqa: E402
from svbench.decoding.drafters.eagle import EagleDrafter  # noqa: E402
from svbench.decoding.drafters.eagle3 import Eagle3Drafter  # noqa: E402
from svbench.decoding.drafters.glide import GlideDrafter  # noqa: E402
from svbench.decoding.drafters.pld import PromptLookupDrafter  # noqa: E402
from svbench.decoding.loop import clock, generate  # noqa: E402
from svbench.decoding.policies import FixedPolicy, HeuristicPolicy, SVIPPolicy  # noqa: E402
from svbench.decoding.target import TargetRunner  # noqa: E402
from svbench.environment import environment  # noqa: E402
from svbench.models import layercut, tiny_llama  # noqa: E402
from svbench.nets.eagle import head_from_target  # noqa: E402
from svbench.nets.eagle3 import eagle3_from_target  # noqa: E402
from svbench.nets.glide import glide_from_target  # noqa: E402
from svbench.sync_count import count_syncs  # noqa: E402

SIZES = {  # init_std: peaked enough that greedy choices are rarely near-ties in low precision
    "1b": dict(vocab_size=32000, hidden_size=2048, num_layers=22, num_heads=32, num_kv_heads=4,
               intermediate_size=5632, init_std=0.05, max_positions=4096, eos_token_id=None),
    "tiny": dict(vocab_size=512, hidden_size=64, num_layers=3, num_heads=4, num_kv_heads=2, intermediate_size=128,
                 init_std=0.3, max_positions=4096, eos_token_id=None),
}


def configurations(nets):
    """(method, policy name, drafter factory, policy factory): every method x {fixed, svip}; pld x {fixed,
    heuristic} (svip needs a draft distribution)."""
    methods = {
        "vanilla_sd": (lambda: DraftModelDrafter(nets["draft"]), 5),
        "glide": (lambda: GlideDrafter(nets["glide"]), 4),
        "glide_cape": (lambda: GlideDrafter(nets["glide"], OFFICIAL_CAPE_BINS), 4),
        "eagle2": (lambda: EagleDrafter(nets["eagle"], 10, 5, 60), 6),
        "eagle2_cpu": (lambda: EagleDrafter(nets["eagle"], 4, 3, 12), 6),
        "eagle3": (lambda: Eagle3Drafter(nets["eagle3"], 10, 7, 60), 8),
        "pld": (lambda: PromptLookupDrafter(), 10),
    }
    for method, (drafter, gamma) in methods.items():
        second = ("heuristic", HeuristicPolicy) if method == "pld" else ("svip", SVIPPolicy)
        for policy, make in (("fixed", lambda g=gamma: FixedPolicy(g)), second):
            yield method, policy, drafter, make


def time_split(target, prompt, tokens, drafter, policy) -> dict:
    """One instrumented run: seconds in target forwards (TargetRunner.forward_tree, synchronised), drafting,
    and the rest of each round."""
    spent = {"target": 0.0}
    original = TargetRunner.forward_tree

    def timed_forward(self, tree):
        start = clock(self.model.device)
        out = original(self, tree)
        spent["target"] += clock(self.model.device) - start
        return out

    TargetRunner.forward_tree = timed_forward
    try:
        out = generate(target, prompt, tokens, drafter, policy, eos_ids=())
    finally:
        TargetRunner.forward_tree = original
    rounds = out.rounds[1:]
    round_s = sum(r.draft_s + r.verify_s for r in rounds)
    draft_s = sum(r.draft_s for r in rounds)
    n = max(1, len(rounds))
    return {"rounds": len(rounds), "ms_per_token": 1e3 * out.wall_time / max(1, len(out.ids)),
            "target_ms": 1e3 * spent["target"] / n, "draft_ms": 1e3 * draft_s / n,
            "other_ms": 1e3 * (round_s - spent["target"] - draft_s) / n,
            "steps_per_round": sum(r.steps for r in rounds) / n}


def syncs_per_round(target, prompt, tokens, drafter, policy) -> float:
    """Host-device syncs per round (the prefill's counted too) in a run of its own, untimed: the counter's
    dispatch mode sends every aten op through Python, which would inflate the time split."""
    with count_syncs() as counts:
        out = generate(target, prompt, tokens, drafter, policy, eos_ids=())
    return sum(counts.values()) / max(1, len(out.rounds) - 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--size", choices=sorted(SIZES), default="1b")
    ap.add_argument("--dtypes", default="float16,bfloat16")
    ap.add_argument("--prompts", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--out", default=str(REPO / "results" / "gpu" / "gpu_check"))
    args = ap.parse_args()
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    if not dtypes or any(not isinstance(getattr(torch, d, None), torch.dtype) for d in dtypes):
        ap.error(f"--dtypes {args.dtypes!r}: torch dtype names separated by commas, e.g. float16,bfloat16")
    if args.prompts < 1 or args.tokens < 1:
        ap.error("--prompts and --tokens: integers >= 1")
    device = torch.device(args.device)
    torch.manual_seed(0)
    base = tiny_llama(seed=0, **SIZES[args.size])  # float32, on the CPU: each dtype's target is a copy
    params = sum(p.numel() for p in base.parameters())
    gen = torch.Generator().manual_seed(0)
    vocab = SIZES[args.size]["vocab_size"]
    prompts = []
    for i in range(args.prompts):  # random ids with a repeated span, so prompt lookup finds something
        ids = torch.randint(0, vocab, (48 + 32 * i,), generator=gen).tolist()
        prompts.append(ids + ids[8:24])
    rows, out = [], Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for dtype_name in dtypes:
        dtype = getattr(torch, dtype_name)
        target = copy.deepcopy(base).to(device=device, dtype=dtype)
        reference = copy.deepcopy(target).float()  # the dtype's weights, computed in float32: agreement's yardstick
        nets = {"draft": layercut(target, 2), "glide": glide_from_target(target, 1).to(device=device, dtype=dtype),
                "eagle": head_from_target(target).to(device=device, dtype=dtype),
                "eagle3": eagle3_from_target(target).to(device=device, dtype=dtype)}
        for prompt in prompts[:1]:  # warm-up (kernels, allocator)
            generate(target, prompt, 8, eos_ids=())
        for method, policy_name, drafter, make_policy in configurations(nets):
            d = drafter()
            generate(target, prompts[0], 8, d, make_policy(), eos_ids=())  # warm-up
            speedups, agreements, splits, ar_ms, sd_ms, per_round = [], [], [], [], [], []
            for prompt in prompts:
                # AR is timed right before its SD run, so both see the same machine state: the H200 run of
                # 2026-11-30 timed AR once per dtype up front, and its speedups contradicted its round costs
                ar_run = generate(target, prompt, args.tokens, eos_ids=())
                sd = generate(target, prompt, args.tokens, d, make_policy(), eos_ids=())
                speedups.append(ar_run.wall_time / sd.wall_time * len(sd.ids) / len(ar_run.ids))
                ar_ms.append(1e3 * ar_run.wall_time / len(ar_run.ids))
                sd_ms.append(1e3 * sd.wall_time / len(sd.ids))
                per_round.append((len(sd.ids) - 1) / max(1, len(sd.rounds) - 1))  # round 0: the prefill's token
                agreements.append(agreement(reference, prompt, ar_run.ids, sd.ids, TIE_BOUND[dtype_name])["agreement"])
                splits.append(time_split(target, prompt, args.tokens, d, make_policy()))
            row = {"dtype": dtype_name, "method": method, "policy": policy_name,
                   "speedup_median": statistics.median(speedups), "speedups": speedups,
                   "ar_ms_per_token": ar_ms, "sd_ms_per_token": sd_ms,
                   "instrumented_ms_per_token": [s["ms_per_token"] for s in splits],  # the time-split run's, per prompt
                   "tokens_per_round": statistics.median(per_round),
                   **{a: agreements.count(a) for a in ("exact", "tie", "mismatch")},
                   **{k: statistics.median(s[k] for s in splits) for k in splits[0]},
                   "syncs_per_round": syncs_per_round(target, prompts[0], args.tokens, d, make_policy())}
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
            write(out, args, params, rows)
        del target, reference, nets
    write(out, args, params, rows)
    print(out.with_suffix(".md").read_text())


def write(out: Path, args, params: int, rows: list[dict]) -> None:
    """OUT.json and OUT.md, rewritten after every configuration (a timeout keeps what finished)."""
    env = environment(args.device)
    command = "python experiments/gpu_check.py " + " ".join(sys.argv[1:])
    out.with_suffix(".json").write_text(json.dumps({"command": command, "params": params, "env": env,
                                                    "rows": rows}, indent=2) + "\n")
    lines = [f"# GPU check: {args.size} random Llama ({params / 1e9:.2f}B parameters), {args.device}", "",
             f"Command: `{command}`. {args.prompts} random prompts x {args.tokens} new tokens, greedy. Speedup: "
             "median per-prompt AR time / SD time, AR timed right before each SD run (ms/token: medians). "
             "Instrumented ms/token: the time-split run's (same configuration, synchronised around every target "
             "forward). Tokens/round: new tokens per drafting round (1 = nothing accepted: random "
             "weights rarely agree). "
             "Time split per drafting round (median over prompts, a second instrumented run): target "
             "forward, drafting, everything else (verify, cache, policy, bookkeeping). Syncs: host-device "
             "synchronisation points per round (svbench.sync_count), counted in a third, untimed run on the first prompt.", "",
             "| dtype | method | policy | speedup | AR ms/token | SD ms/token | instrumented ms/token | tokens/round | "
             "exact | tie | mismatch | steps/round | target ms | draft ms | other ms | syncs/round |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['dtype']} | {r['method']} | {r['policy']} | {r['speedup_median']:.2f} | "
                     f"{statistics.median(r['ar_ms_per_token']):.2f} | {statistics.median(r['sd_ms_per_token']):.2f} | "
                     f"{r['ms_per_token']:.2f} | "
                     f"{r['tokens_per_round']:.2f} | {r['exact']} | "
                     f"{r['tie']} | {r['mismatch']} | {r['steps_per_round']:.1f} | {r['target_ms']:.2f} | "
                     f"{r['draft_ms']:.2f} | {r['other_ms']:.2f} | {r['syncs_per_round']:.1f} |")
    lines += ["", "Environment: `" + json.dumps(env) + "`", ""]
    out.with_suffix(".md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
