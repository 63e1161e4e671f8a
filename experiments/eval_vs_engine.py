"""The eval's tau (svbench.train.eval, the model cards) against the engine's tau on the engine's own text.

The eval drafts from start positions drawn uniformly in each answer (up to the same number per answer: a start
needs 8 reference tokens after it) and averages over the starts. The engine drafts from wherever its last round
ended, and its tau is tokens / rounds, so hard text (more rounds per token) and long answers weigh more.
On one greedy `policy=fixed` engine run (first turns) this measures:

  engine            tau of the run's rounds, as recorded;
  eval @ rounds     the eval's drafting (lengths_at) from each recorded round's root, capped at that round's
                    steps: equal to the engine up to bf16 differences of a prefill vs an incremental cache
                    (the share of rounds whose accepted length agrees is printed);
  eval @ uniform    the eval's drafting from uniformly drawn answer positions of the same text (what a model
                    card averages), capped at the run's largest step count.

Results: results/eval_vs_engine_smollm2.md.

    python experiments/eval_vs_engine.py RUN_DIR [--per-category 2] [--uniform 12] [--out FILE]

RUN_DIR: the folder of a greedy `python -m svbench ... policy=fixed` run (records.jsonl, summary.json), e.g.
results/experiments/s15_eagle/smollm2/eagle2-fixed-shipped. The pair, draft folder, drafter parameters and
dtype are the run's own (summary.json). Writes --out (JSON) with the per-answer lengths.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from svbench.benchmarks import build_prompt, load_benchmark  # noqa: E402
from svbench.config import build_drafter, group_config  # noqa: E402
from svbench.decoding.drafters import drafter_class  # noqa: E402
from svbench.errors import SvbenchError, report_user_errors  # noqa: E402
from svbench.models import load_pair  # noqa: E402
from svbench.results import read_records  # noqa: E402
from svbench.train.eval import GAMMA_MAX, lengths_at, round_roots  # noqa: E402


def main(args) -> dict:
    if args.per_category < 1 or args.uniform < 1:
        raise SvbenchError(f"--per-category {args.per_category} --uniform {args.uniform}: both must be >= 1")
    run = Path(args.run_dir)
    if not (run / "records.jsonl").is_file() or not (run / "summary.json").is_file():
        raise SvbenchError(f"{run}: not a run folder (records.jsonl and summary.json expected)")
    cfg = json.loads((run / "summary.json").read_text())["config"]
    if cfg["policy"]["name"] != "fixed" or cfg["temperature"] != 0.0 or cfg["prompt_template"] != "chat":
        raise SvbenchError(f"{run}: policy={cfg['policy']['name']}, temperature={cfg['temperature']}, "
                           f"prompt_template={cfg['prompt_template']}; this compares a greedy policy=fixed chat run")
    first, count = [], {}
    for r in read_records(run / "records.jsonl"):  # the first --per-category first turns of each category
        if r["turn"] == 0 and r["run"] == 0 and count.get(r["category"], 0) < args.per_category:
            first.append(r)
            count[r["category"]] = count.get(r["category"], 0) + 1
    records = first
    if not records:
        raise SvbenchError(f"{run}: no first-turn records")
    pair = load_pair(cfg["pair"], cfg["dtype"], "cpu", drafter_cls=drafter_class(cfg["method"]))
    drafter = build_drafter(cfg, pair)
    reads_target = None if drafter.network == "draft" else pair.target  # GliDe and EAGLE read the target
    questions = {q.question_id: q for q in load_benchmark(group_config("benchmark", records[0]["benchmark"]))}
    rng = random.Random(args.seed)
    engine, at_rounds, uniform, per_seq = [], [], [], []
    for r in records:
        prompt = build_prompt(pair.tokenizer, "chat", [questions[r["question_id"]].turns[0]], [])
        if len(prompt) != r["prompt_len"]:
            raise SvbenchError(f"question {r['question_id']}: prompt of {len(prompt)} tokens, the run had "
                               f"{r['prompt_len']} (another prompt_template?)")
        ids = prompt + r["ids"]
        rounds = r["rounds"]
        roots = round_roots(list(zip(rounds["drafted"], rounds["accepted"], rounds["steps"])), len(prompt))
        lengths = lengths_at(drafter, ids, [t for t, _, _ in roots], reads_target)
        engine += [a for _, _, a in roots]
        at_rounds += [min(n, steps) for n, (_, steps, _) in zip(lengths, roots)]
        levels = max(steps for _, steps, _ in roots)
        positions = list(range(len(prompt), len(ids) - GAMMA_MAX))
        starts = sorted(rng.sample(positions, min(args.uniform, len(positions))))
        uniform += [min(n, levels) for n in lengths_at(drafter, ids, starts, reads_target)]
        per_seq.append({"question_id": r["question_id"], "engine": [a for _, _, a in roots],
                        "eval_at_rounds": at_rounds[-len(roots):]})
        print(f"{r['question_id']:>5s}: {len(roots)} rounds, engine tau {1 + statistics.fmean(per_seq[-1]['engine']):.2f}"
              f", eval at its roots {1 + statistics.fmean(per_seq[-1]['eval_at_rounds']):.2f}", file=sys.stderr)
    tau = lambda xs: 1 + statistics.fmean(xs)  # noqa: E731
    result = {"run_dir": str(run), "method": cfg["method"], "draft": cfg["pair"].get(drafter.network),
              "seqs": len(records), "per_category": args.per_category,
              "rounds": len(engine), "uniform_starts": len(uniform),
              "tau_engine": tau(engine), "tau_eval_at_rounds": tau(at_rounds), "tau_eval_uniform": tau(uniform),
              "rounds_with_equal_L": sum(a == b for a, b in zip(engine, at_rounds)) / len(engine),
              "per_seq": per_seq}
    print(json.dumps({k: v for k, v in result.items() if k != "per_seq"}, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", help="folder of a greedy policy=fixed engine run (records.jsonl, summary.json)")
    ap.add_argument("--per-category", type=int, default=2, help="first-turn records per category")
    ap.add_argument("--uniform", type=int, default=12, help="uniform starts per sequence")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    report_user_errors(main, ap.parse_args())
