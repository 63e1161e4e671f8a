"""Where does a draft LM lose the target? Greedy agreement (draft argmax == target argmax, i.e. first-position
acceptance) per bin of the target's own top-1 probability, on held-out greedy answers of the generated data.

A draft that matched the target's distribution exactly would agree everywhere under greedy decoding; a small
one agrees where the target is sure and guesses where its top tokens are close. So the share of positions
where the target is unsure, and the draft's agreement there, say how much of tau's shortfall is the target's
text and how much the draft. Teacher-forced: one forward of each model over each whole sequence.

    python experiments/agreement_vs_target_confidence.py [--draft DIR ...] [--heldout-seqs 60] [--out results/NAME]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from svbench.config import group_config  # noqa: E402
from svbench.decoding.drafters import drafter_class  # noqa: E402
from svbench.decoding.policies import SVIPPolicy  # noqa: E402
from svbench.decoding.verify import entropy  # noqa: E402
from svbench.environment import write_result  # noqa: E402
from svbench.errors import SvbenchError, report_user_errors  # noqa: E402
from svbench.models import load_pair  # noqa: E402
from svbench.train.data import read_shards  # noqa: E402

EDGES = [0.0, 0.2, 0.4, 0.6, 0.8, 0.9, 1.0001]  # bins of the target's top-1 probability


@torch.inference_mode()
def positions(draft_dir: str, seqs: list[dict]) -> dict[str, torch.Tensor]:
    """Per answer position of every sequence: target top-1 prob, target and draft entropy (nats; the draft's over
    its drafting vocabulary, as svip sees it), draft agrees (0/1)."""
    cls = drafter_class(group_config("method", "vanilla_sd"))
    pair_cfg = group_config("pair", "smollm2")
    pair_cfg["draft"] = {"source": "trained", "path": draft_dir}
    pair = load_pair(pair_cfg, "bfloat16", "cpu", drafter_cls=cls)
    drafter = cls.from_pair(pair)  # over its reduced vocabulary when the folder has one, as it drafts
    out = {"p1": [], "entropy": [], "draft_entropy": [], "agree": []}
    for row in seqs:
        ids = torch.tensor([row["ids"]])  # (1, T)
        answer = slice(row["prompt_len"] - 1, ids.shape[1] - 1)  # positions whose next token is an answer token
        log_p = torch.log_softmax(pair.target(input_ids=ids).logits[0, answer].float(), -1)  # (A, V)
        p1, target = log_p.exp().max(-1)  # (A,), (A,)
        draft_logits = drafter.sequence_logits(ids)[answer].float()  # (A, V) or (A, N)
        draft = drafter.token_id(draft_logits.argmax(-1))  # (A,) token ids
        out["p1"].append(p1)
        out["entropy"].append(entropy(log_p))
        out["draft_entropy"].append(entropy(torch.log_softmax(draft_logits, -1)))
        out["agree"].append((draft == target).float())
    return {k: torch.cat(v) for k, v in out.items()}


def table(name: str, pos: dict[str, torch.Tensor], svip: SVIPPolicy) -> tuple[list[str], dict]:
    n = len(pos["p1"])
    misses = (1 - pos["agree"]).sum().item()
    rows, lines = [], [f"### {name}", "",
                       "| target top-1 prob | positions | share | draft agreement | share of all disagreements |",
                       "|---|---:|---:|---:|---:|"]
    for lo, hi in zip(EDGES, EDGES[1:]):
        sel = (pos["p1"] >= lo) & (pos["p1"] < hi)
        k = int(sel.sum())
        agree = pos["agree"][sel].mean().item() if k else None
        miss = (1 - pos["agree"][sel]).sum().item() / misses if misses else 0.0
        rows.append({"lo": lo, "hi": min(hi, 1.0), "positions": k, "share": k / n, "agreement": agree,
                     "share_of_disagreements": miss})
        lines.append(f"| [{lo:.1f}, {min(hi, 1.0):.1f}{']' if hi > 1 else ')'} | {k} | {k / n:.3f} | "
                     f"{'-' if agree is None else f'{agree:.3f}'} | {miss:.3f} |")
    stops = sum(svip.should_stop(1, None, h) for h in pos["draft_entropy"].tolist()) / n
    summary = {"positions": n, "agreement": pos["agree"].mean().item(),
               "target_p1_median": pos["p1"].median().item(),
               "target_entropy_median": pos["entropy"].median().item(),
               "draft_entropy_median": pos["draft_entropy"].median().item(),
               "share_p1_below_0.5": (pos["p1"] < 0.5).float().mean().item(), "share_svip_stops": stops}
    lines += ["", f"Overall agreement {summary['agreement']:.3f} over {n} positions. The target's top-1 probability "
                  f"has median {summary['target_p1_median']:.3f} and is below 0.5 at "
                  f"{summary['share_p1_below_0.5']:.1%} of positions. Median entropy: target "
                  f"{summary['target_entropy_median']:.2f} nats, draft {summary['draft_entropy_median']:.2f} nats "
                  f"(over its drafting vocabulary). svip's default stop (sqrt({svip.c} H) > {svip.h}, H > "
                  f"{svip.h ** 2 / svip.c:.2f} nats) fires at {stops:.1%} of these positions.", ""]
    return lines, {"draft": name, "bins": rows, **summary}


def run(args) -> None:
    for d in args.draft:
        if not (Path(d) / "config.json").is_file():
            raise SvbenchError(f"--draft {d}: no draft folder (config.json missing)")
    torch.set_num_threads(2)
    seqs = [r for r in read_shards(Path(args.data), split="heldout") if r["temperature"] == 0.0][: args.heldout_seqs]
    if not seqs:
        raise SvbenchError(f"--data {args.data}: no greedy held-out answers")
    svip = SVIPPolicy(**{k: v for k, v in group_config("policy", "svip").items() if k in ("c", "h", "max_len")})
    command = " ".join(["python experiments/agreement_vs_target_confidence.py", *sys.argv[1:]])
    lines = ["# Draft agreement vs the target's confidence (SmolLM2-135M, bf16, greedy held-out answers)", "",
             f"`{command}`: {len(seqs)} held-out greedy answers of `{args.data}`. Agreement: the draft's argmax "
             "equals the target's at an answer position (first-position greedy acceptance), teacher-forced.", ""]
    rows = []
    for d in args.draft:
        text, row = table(f"`{d}`", positions(d, seqs), svip)
        lines += text
        rows.append(row)
    if args.out:
        write_result(args.out, lines, command, rows)
    else:
        print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draft", nargs="+", default=["drafts/smollm2-135m-draft-lm"], help="draft LM folder(s)")
    ap.add_argument("--data", default="train_data/smollm2", help="generated data with a held-out split")
    ap.add_argument("--heldout-seqs", type=int, default=60)
    ap.add_argument("--out", type=Path, default=None, help="writes OUT.md and OUT.json; default: print only")
    args = ap.parse_args()
    if args.heldout_seqs < 1:
        ap.error("--heldout-seqs must be >= 1")
    report_user_errors(run, args)


if __name__ == "__main__":
    main()
