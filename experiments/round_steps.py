"""How many drafting steps the rounds of recorded runs took (records.jsonl `rounds.steps`: chain length, or a
tree's depth / a CaPE spine's steps), e.g. to check how often a GliDe draft ran staler than it was trained for
(conf/train/glide.yaml `block_size` - 1 steps).

    python experiments/round_steps.py RECORDS [RECORDS ...] [--over 4]

Prints per file and method: rounds, the distribution of steps per round, and the share of rounds over --over.
"""
from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path


def step_counts(path: Path) -> dict[str, collections.Counter]:
    """method -> Counter of steps per round, over every SD record of the file (AR records have no rounds)."""
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for line in path.read_text().splitlines():
        record = json.loads(line)
        steps = (record.get("rounds") or {}).get("steps")
        if steps:
            counts[record["method"]].update(steps)
    return counts


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("records", nargs="+", type=Path)
    ap.add_argument("--over", type=int, default=4, help="report the share of rounds with more steps than this")
    args = ap.parse_args(argv)
    missing = [str(p) for p in args.records if not p.is_file()]
    if missing:
        ap.error(f"no such records file: {', '.join(missing)}")
    for path in args.records:
        try:
            counts = step_counts(path)
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            ap.error(f"{path}: not svbench records ({type(e).__name__}: {e})")
        for method, c in sorted(counts.items()):
            n = sum(c.values())
            over = sum(v for k, v in c.items() if k > args.over)
            print(f"{path}: {method}: {n} rounds; steps per round {dict(sorted(c.items()))}; "
                  f"over {args.over}: {over} ({over / n:.4f})")


if __name__ == "__main__":
    main()
