"""Which attention path makes the target's forward fastest on THIS CPU: one SmolLM2-135M forward of q new tokens
(1 = AR decoding, a few = a chain verify) on L cached tokens, bf16, for each path of svbench.attention, the
paths interleaved in rounds on the same cache (medians over rounds). `attention=auto` picks svbench_cpu for
bf16 on a CPU because transformers' sdpa was 4x slower for one query on the machine that measured
results/attention_paths_cpu.md; this checks that premise on the machine at hand.

    python experiments/attention_forward_cpu.py [--lengths 128,512,1024,2048] [--queries 1,4] [--rounds 7]
        [--out results/attention_forward_cpu]

Writes <out>.json (every timing) and <out>.md (the table, with the CPU's model name and flags that matter).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from svbench.config import group_config
from svbench.decoding.kv_cache import StaticKVCache
from svbench.models import load_pair

REPO = Path(__file__).resolve().parents[1]
PATHS = ("svbench_cpu", "sdpa")


def cpu_description() -> str:
    """Model name and the vector extensions that decide bf16 kernels (avx512_bf16, amx_bf16), from /proc/cpuinfo."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown CPU"
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    wanted = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    return f"{name}; flags: {' '.join(wanted) or 'none of avx2/avx512/amx'}"


def parse_ints(text: str, ap: argparse.ArgumentParser, name: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        ap.error(f"{name}: positive integers separated by commas")
    return values


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", default="128,512,1024,2048")
    ap.add_argument("--queries", default="1,4")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--reps", type=int, default=10, help="forwards per path per round (their mean is one sample)")
    ap.add_argument("--out", default=str(REPO / "results" / "attention_forward_cpu"))
    args = ap.parse_args()
    lengths, queries = parse_ints(args.lengths, ap, "--lengths"), parse_ints(args.queries, ap, "--queries")
    if args.rounds < 1 or args.reps < 1:
        ap.error("--rounds and --reps: integers >= 1")
    model = load_pair(group_config("pair", "smollm2_layercut"), "bfloat16", "cpu", drafter_cls=None).target
    g = torch.Generator().manual_seed(0)
    rows = []
    for L in lengths:
        for q in queries:
            with torch.inference_mode():
                cache = StaticKVCache(model.config.num_hidden_layers, L + q)
                model.model(input_ids=torch.randint(0, 40000, (1, L), generator=g), cache=cache, use_cache=True)
                ids = torch.randint(0, 40000, (1, q), generator=g)
                positions = torch.arange(L, L + q)[None]  # (1, q)

                def forward():
                    for layer in cache.layers:
                        layer.length = L  # the same L cached tokens every time
                    model.model(input_ids=ids, position_ids=positions, cache=cache, use_cache=True)

                samples = {p: [] for p in PATHS}
                for r in range(args.rounds):
                    for path in (PATHS if r % 2 == 0 else PATHS[::-1]):  # ABBA: neither path always first
                        model.set_attn_implementation(path)
                        forward()  # warm
                        start = time.perf_counter()
                        for _ in range(args.reps):
                            forward()
                        samples[path].append(1e3 * (time.perf_counter() - start) / args.reps)
            row = {"cached": L, "queries": q, **{f"{p}_ms": statistics.median(s) for p, s in samples.items()},
                   "samples": samples}
            row["sdpa_vs_svbench_cpu"] = row["svbench_cpu_ms"] / row["sdpa_ms"]
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "samples"}), flush=True)
    meta = {"cpu": cpu_description(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "rounds": args.rounds, "reps": args.reps}
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = [f"# The target's forward by attention path (SmolLM2-135M, bf16, {meta['threads']} threads)", "",
             f"CPU: {meta['cpu']}; torch {meta['torch']}. Command: `python experiments/attention_forward_cpu.py "
             f"--lengths {args.lengths} --queries {args.queries} --rounds {args.rounds}`. One forward of the whole "
             f"model, ms, median over {args.rounds} rounds (each the mean of {args.reps} forwards; paths alternate "
             f"in ABBA order).", "",
             "| cached | queries | svbench_cpu ms | sdpa ms | svbench_cpu / sdpa |", "|---|---|---|---|---|"]
    lines += [f"| {r['cached']} | {r['queries']} | {r['svbench_cpu_ms']:.2f} | {r['sdpa_ms']:.2f} | "
              f"{r['sdpa_vs_svbench_cpu']:.2f} |" for r in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out}.json and {out}.md")


if __name__ == "__main__":
    main()
