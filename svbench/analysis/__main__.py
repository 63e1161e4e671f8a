"""python -m svbench.analysis PATH [PATH ...] --out DIR
python -m svbench.analysis export PATH [PATH ...] --out answers.jsonl [--tokenizer NAME_OR_DIR]
python -m svbench.analysis claims EXPERIMENTS_DIR --pair PAIR --out claims.md
python -m svbench.analysis compare A B"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from svbench.errors import SvbenchError, report_user_errors


def analysis_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m svbench.analysis",
                                 description="Tables and figures of svbench runs (or Spec-Bench answer files). "
                                             "'python -m svbench.analysis export -h': Spec-Bench export.")
    ap.add_argument("paths", nargs="+", metavar="PATH",
                    help="run dir, sweep dir, records.jsonl or Spec-Bench model_answer .jsonl")
    ap.add_argument("--out", required=True, type=Path, help="folder the tables and figures are written to")
    return ap


def export_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m svbench.analysis export",
                                 description="Write runs as Spec-Bench model_answer JSONL: the SD records to --out, "
                                             "their AR baselines beside it (OUT_STEM-ar.jsonl).")
    ap.add_argument("paths", nargs="+", metavar="PATH", help="run dir, sweep dir or records.jsonl")
    ap.add_argument("--out", required=True, type=Path, help="answer file to write (.jsonl)")
    ap.add_argument("--tokenizer", default=None,
                    help="a tokenizer (hub name or folder) to decode answers; default: token ids as text")
    return ap


def claims_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m svbench.analysis claims",
                                 description="The papers' claims checked on SVIP Tables 1-4's records "
                                             "(EXPERIMENTS_DIR/svip_table*/PAIR), each with its verdict.")
    ap.add_argument("root", type=Path, metavar="EXPERIMENTS_DIR", help="e.g. results/experiments")
    ap.add_argument("--pair", default="smollm2", help="the model pair's name (default: smollm2)")
    ap.add_argument("--goal", type=float, default=2.0, help="speedup the best method should reach (default 2.0)")
    ap.add_argument("--out", required=True, type=Path, help="markdown file to write")
    return ap


def compare_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m svbench.analysis compare",
                                 description="B against A, paired on the question-turns both ran: speedup and tau "
                                             "of each, the difference B - A with its 95% interval and a verdict "
                                             "(one markdown table on stdout). A and B: one configuration each.")
    ap.add_argument("a", metavar="A", help="run dir, sweep dir, records.jsonl or Spec-Bench answer file "
                                           "holding one configuration")
    ap.add_argument("b", metavar="B", help="the same, for the configuration compared against A")
    return ap


def compare(args) -> list[Path]:
    from svbench.analysis.inputs import load_records, sd_records
    from svbench.analysis.metrics import compare_runs
    from svbench.analysis.report import CAPTIONS
    from svbench.analysis.tables import markdown

    a, b = (sd_records(load_records(p), [p]) for p in (args.a, args.b))
    print(markdown(compare_runs(a, b, args.a, args.b), CAPTIONS["compare"]), end="")
    return []


def claims(args) -> list[Path]:
    from svbench.analysis.claims import claims_table

    table = claims_table(args.root, args.pair, args.goal)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table)
    return [args.out]


def load_tokenizer(name):
    if name is None:
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as exc:
        raise SvbenchError(f"cannot load tokenizer {name!r}: {exc}") from None


def export(args) -> list[Path]:
    from svbench.analysis.inputs import load_records, sd_records
    from svbench.analysis.specbench import export_answers

    records = load_records(args.paths)
    tokenizer = load_tokenizer(args.tokenizer)
    written = [export_answers(sd_records(records, args.paths), args.out, tokenizer)]
    ar = [r for r in records if r["method"] == "ar"]
    if ar:
        written.append(export_answers(ar, args.out.with_name(f"{args.out.stem}-ar{args.out.suffix}"), tokenizer))
    return written


def analysis(args) -> list[Path]:
    from svbench.analysis.report import analyze

    return analyze(args.paths, args.out)


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["export"]:
        files = report_user_errors(export, export_parser().parse_args(argv[1:]))
    elif argv[:1] == ["compare"]:
        files = report_user_errors(compare, compare_parser().parse_args(argv[1:]))
    elif argv[:1] == ["claims"]:
        files = report_user_errors(claims, claims_parser().parse_args(argv[1:]))
    else:
        files = report_user_errors(analysis, analysis_parser().parse_args(argv))
    for path in files:
        print(path)


if __name__ == "__main__":
    main()
