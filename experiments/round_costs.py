"""Per-round costs of runs that time AR and SD side by side (no baseline_records): AR's step, SD's verify and
draft time, each averaged over the rounds after the prefill, and verify / AR step: how much dearer a verify
forward is than a one-token forward in that run's machine state.

    python experiments/round_costs.py RUN_DIR [RUN_DIR ...]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from svbench.analysis.metrics import after_prefill


def mean_ms(records, key: str) -> float:
    """Mean of rounds[key] over the rounds after each record's prefill round, in ms (for SD's verify time the
    mean in svbench.analysis.metrics.decode_costs, which needs draft counts and has none for AR)."""
    values = after_prefill(records, key)
    return 1000 * sum(values) / len(values)


def main(dirs: list[str]) -> None:
    if not dirs:
        sys.exit(__doc__.strip().splitlines()[-1].strip())
    runs = {}
    for d in dirs:  # every directory read and checked before the table starts
        path = Path(d) / "records.jsonl"
        if not path.exists():
            sys.exit(f"{path}: no such file (give run directories holding records.jsonl)")
        records = [json.loads(line) for line in path.open()]
        ar = [r for r in records if r["method"] == "ar"]
        sd = [r for r in records if r["method"] != "ar"]
        if not ar or not sd:
            sys.exit(f"{path}: needs AR and SD records side by side (a run without baseline_records)")
        runs[d] = ar, sd
    print("| run | AR step ms | SD verify ms/round | SD draft ms/round | verify / AR step |\n|---|---:|---:|---:|---:|")
    for d, (ar, sd) in runs.items():
        ar_ms, verify_ms = mean_ms(ar, "verify_s"), mean_ms(sd, "verify_s")
        print(f"| {d} | {ar_ms:.1f} | {verify_ms:.1f} | {mean_ms(sd, 'draft_s'):.1f} | {verify_ms / ar_ms:.3f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
