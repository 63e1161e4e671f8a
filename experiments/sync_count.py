"""Host-device syncs per decoding round for every method x policy on pair=tiny (counted with
svbench.sync_count), and microseconds of harness time per round (round time minus the model forwards is
not separable on a CPU; the tiny pair's forwards are small, so its round time is the GPU proxy).

    python experiments/sync_count.py [--tokens 48] [--out results/sync_count_tiny] [--note "what else ran"]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hydra import compose, initialize_config_dir  # noqa: E402

from svbench.config import build_drafter, build_policy, validate  # noqa: E402
from svbench.decoding.drafters import drafter_class  # noqa: E402
from svbench.decoding.loop import generate  # noqa: E402
from svbench.decoding.verify import Sampling  # noqa: E402
from svbench.environment import write_result  # noqa: E402
from svbench.models import load_pair  # noqa: E402
from svbench.sync_count import count_syncs  # noqa: E402

METHODS = ("vanilla_sd", "glide", "glide_cape", "eagle2", "eagle2_cpu", "eagle3", "pld")
PROMPT = [5, 17, 42, 99, 3, 250, 11, 5, 17, 42]


def measure(method: str, policy: str, sampling: Sampling, tokens: int) -> dict:
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        c = validate(compose(config_name="config", overrides=[f"method={method}", f"policy={policy}", "pair=tiny",
                                                              "dtype=float32"]))
    pair = load_pair(c["pair"], "float32", "cpu", drafter_cls=drafter_class(c["method"]))
    drafter, length_policy = build_drafter(c, pair), build_policy(c)
    generator = torch.Generator().manual_seed(0)
    generate(pair.target, PROMPT, 8, drafter, length_policy, sampling, generator=generator)  # warm-up
    with count_syncs() as counts:
        out = generate(pair.target, PROMPT, tokens, drafter, length_policy, sampling, generator=generator)
    rounds = len(out.rounds)  # the prefill's round (0 draft steps) included: its syncs are counted too
    steps = sum(r.steps for r in out.rounds)
    start = time.perf_counter()
    for _ in range(3):
        timed = generate(pair.target, PROMPT, tokens, drafter, length_policy, sampling, generator=generator)
    per_round_us = (time.perf_counter() - start) / 3 / max(1, len(timed.rounds) - 1) * 1e6
    total = sum(counts.values())
    return {"method": method, "policy": policy, "temperature": sampling.temperature, "rounds": rounds,
            "steps_per_round": steps / max(1, rounds), "syncs_per_round": total / max(1, rounds),
            "budget_per_round": steps / max(1, rounds) + 3, "by_kind": dict(counts),
            "us_per_round": per_round_us}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--out", default=str(REPO / "results" / "sync_count_tiny"))
    ap.add_argument("--note", default="", help="a line for the table's header, e.g. what else ran on the machine")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for method in METHODS:
        for policy in ("fixed", "svip"):
            if method == "pld" and policy == "svip":
                continue
            for temperature in (0.0, 1.0):
                rows.append(measure(method, policy, Sampling(temperature), args.tokens))
                print(json.dumps(rows[-1]), file=sys.stderr)
    lines = ["# Host-device syncs per round (pair=tiny, float32, CPU)", "",
             f"Command: `python experiments/sync_count.py --tokens {args.tokens}`. Budget (issue 13): one per draft "
             "step + 3 per round. Microseconds per round: the tiny pair's whole round (its forwards are small, "
             "so this is mostly harness time), 1 thread.", "", *([args.note, ""] if args.note else []),
             "| method | policy | T | steps/round | syncs/round | budget | within | us/round |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['policy']} | {r['temperature']:g} | {r['steps_per_round']:.1f} | "
                     f"{r['syncs_per_round']:.1f} | {r['budget_per_round']:.1f} | "
                     f"{'yes' if r['syncs_per_round'] <= r['budget_per_round'] else 'NO'} | {r['us_per_round']:.0f} |")
    write_result(args.out, lines, f"python experiments/sync_count.py --tokens {args.tokens}", rows)


if __name__ == "__main__":
    main()
