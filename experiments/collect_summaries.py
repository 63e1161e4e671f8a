"""Collect run directories' summary.json into one markdown table.

    python experiments/collect_summaries.py RUN_DIR [RUN_DIR ...] --out results/table.md
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

COLUMNS = ["speedup", "speedup_pooled", "tau", "acceptance_rate", "mean_draft_len", "tokens_per_s",
           "ar_tokens_per_s", "lossless", "n"]


def markdown(frame: pd.DataFrame) -> str:
    def cell(v):
        if v is None or (isinstance(v, float) and v != v):
            return "-"
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join([frame.index.name or ""] + [str(c) for c in frame.columns]) + " |",
             "|" + "---|" * (len(frame.columns) + 1)]
    counts = {"lossless", "n"}
    lines += ["| " + " | ".join([str(i)] + [str(int(v)) if c in counts and v == v else cell(v)
                                          for c, v in row.items()]) + " |" for i, row in frame.iterrows()]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    rows, envs, commands = [], set(), []
    for run in args.runs:
        data = json.loads((Path(run) / "summary.json").read_text())
        policy = data["config"]["policy"]
        params = {k: v for k, v in policy.items() if k not in ("name", "_target_")}
        label = f"{data['method']} / {data['policy']} {params}"
        for category, metrics in data["summary"].items():
            rows.append({"run": label, "category": category, **{k: metrics.get(k) for k in COLUMNS}})
        envs.add(json.dumps({k: data["env"][k] for k in ("cpu", "gpu", "torch", "transformers", "torch_threads")}))
        commands.append(f"{Path(run)} (config hash {data['config_hash']})")
    frame = pd.DataFrame(rows)
    overall = frame[frame.category == "overall"].drop(columns="category").set_index("run")
    per_category = frame.pivot(index="run", columns="category", values="speedup")
    text = ["## Overall", "", markdown(overall), "", "## Speedup per category", "",
            markdown(per_category), "", "Runs: " + "; ".join(commands), "",
            "Environment: " + "; ".join(sorted(envs)), ""]
    Path(args.out).write_text("\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
