"""Spec-Bench interop: svbench records <-> Spec-Bench ``model_answer`` JSONL.

Schema, as Spec-Bench's evaluation/eval.py writes it (hemingkx/Spec-Bench), one line per question:
``{"question_id", "category", "answer_id", "model_id", "choices": [{"index", "turns", "decoding_steps",
"new_tokens", "wall_time", "accept_lengths"}], "tstamp"}``; turns, decoding_steps, new_tokens and wall_time
hold one entry per turn, accept_lengths is ONE flat list over the choice's turns (per decoding step:
accepted draft tokens + 1), which evaluation/speed.py averages as is. The export writes it the same way
(every round, the prefill included, with decoding_steps = rounds per turn, so the flat list splits back
into turns) and adds a "svbench" object (the record's identity and its AR baseline) that Spec-Bench
ignores. A choice is one repeated run (`run` index). Spec-Bench files without it import with
method/policy parsed from model_id, pair/benchmark "unknown", and no drafted counts or draft times.
"""
from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

from svbench.errors import SvbenchError

IDENTITY = ("method", "policy", "pair", "benchmark", "seed", "temperature", "dtype", "device", "max_new_tokens",
            "config_hash")


def model_id(record: dict) -> str:
    return f"{record['method']}-{record['policy']}"


def parse_model_id(name: str) -> tuple[str, str]:
    """(method, policy) from a model_id: svbench's 'method-policy'; Spec-Bench's '...-vanilla-...' is AR."""
    if "vanilla" in name.split("-"):
        return "ar", "none"
    parts = name.split("-")
    if len(parts) == 2 and all(parts):
        return parts[0], parts[1]
    return name, "none"


def turn_text(record: dict, tokenizer=None) -> str:
    """The answer's text, or its token ids separated by spaces when no tokenizer is given."""
    if tokenizer is not None:
        return tokenizer.decode(record["ids"], skip_special_tokens=True)
    return " ".join(str(i) for i in record["ids"])


def choice(index: int, turns: list[dict], tokenizer=None) -> dict:
    """One run of a question: its turns in order."""
    return {"index": index, "turns": [turn_text(r, tokenizer) for r in turns],
            "decoding_steps": [len(r["rounds"]["accepted"]) for r in turns],
            "new_tokens": [r["new_tokens"] for r in turns], "wall_time": [r["wall_time"] for r in turns],
            "accept_lengths": [a + 1 for r in turns for a in r["rounds"]["accepted"]],
            "svbench": {"run": turns[0]["run"], "ar_new_tokens": [r.get("ar_new_tokens") for r in turns],
                        "ar_wall_time": [r.get("ar_wall_time") for r in turns]}}


def answers(records: list[dict], tokenizer=None) -> list[dict]:
    """One answer per (model_id, question) in first-seen order; one choice per run."""
    by_answer: dict[tuple, dict[int, list[dict]]] = {}
    for r in records:
        key = (model_id(r), r["config_hash"], r["question_id"])
        by_answer.setdefault(key, {}).setdefault(r["run"], []).append(r)
    out = []
    for (name, _, qid), runs in by_answer.items():
        first = next(iter(runs.values()))[0]
        choices = [choice(i, sorted(turns, key=lambda r: r["turn"]), tokenizer)
                   for i, (_, turns) in enumerate(sorted(runs.items()))]
        out.append({"question_id": qid, "category": first["category"], "answer_id": uuid.uuid4().hex,
                    "model_id": name, "choices": choices, "tstamp": time.time(),
                    "svbench": {k: first.get(k) for k in IDENTITY}})
    return out


def export_answers(records: list[dict], path, tokenizer=None) -> Path:
    """Write records as Spec-Bench model_answer JSONL; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for answer in answers(records, tokenizer):
            fh.write(json.dumps(answer) + "\n")
    return path


def check_answer(row, where: str) -> None:
    if not isinstance(row, dict) or not {"question_id", "model_id", "choices"} <= set(row) \
            or not isinstance(row["choices"], list):
        raise SvbenchError(f"{where}: not a Spec-Bench model_answer line (needs question_id, model_id, choices)")
    for c in row["choices"]:
        lists = isinstance(c, dict) and all(isinstance(c.get(k), list) for k in ("turns", "new_tokens", "wall_time"))
        if not lists or not len(c["turns"]) == len(c["new_tokens"]) == len(c["wall_time"]):
            raise SvbenchError(f"{where}: a choice needs turns, new_tokens and wall_time lists of one length")


def split_accept_lengths(c: dict) -> list[list[int]]:
    """The flat accept_lengths cut into turns by decoding_steps; all on the first turn when they disagree."""
    flat, steps, n = list(c.get("accept_lengths") or []), c.get("decoding_steps"), len(c["turns"])
    if isinstance(steps, list) and len(steps) == n and sum(steps) == len(flat):
        cuts = [sum(steps[:i]) for i in range(n + 1)]
        return [flat[cuts[i]:cuts[i + 1]] for i in range(n)]
    return [flat] + [[] for _ in range(n - 1)]


def ar_baseline(c: dict, method: str, turn: int) -> tuple:
    """(AR new tokens, AR wall time) of a turn: its own for AR, else the export's svbench extras if any."""
    if method == "ar":
        return c["new_tokens"][turn], c["wall_time"][turn]
    extra = c.get("svbench") or {}
    tokens, times = extra.get("ar_new_tokens") or [], extra.get("ar_wall_time") or []
    if turn < min(len(tokens), len(times)) and times[turn]:
        return tokens[turn], times[turn]
    return None, None


def turn_record(row: dict, meta: dict, c: dict, run: int, turn: int, accept: list[int]) -> dict:
    method, policy = (meta["method"], meta["policy"]) if "method" in meta else parse_model_id(row["model_id"])
    accepted = [a - 1 for a in accept]
    record = {"method": method, "policy": policy, "pair": meta.get("pair", "unknown"),
              "benchmark": meta.get("benchmark", "unknown"), "seed": meta.get("seed", 0),
              "temperature": meta.get("temperature"), "dtype": meta.get("dtype"), "device": meta.get("device"),
              "max_new_tokens": meta.get("max_new_tokens"), "question_id": row["question_id"],
              "category": row.get("category", "unknown"), "turn": turn, "run": run,
              "config_hash": meta.get("config_hash", row["model_id"]), "prompt_len": None,
              "new_tokens": c["new_tokens"][turn], "wall_time": c["wall_time"][turn], "hit_eos": None, "ids": None,
              "rounds": {"drafted": [0] * len(accepted), "accepted": accepted, "draft_s": [0.0] * len(accepted),
                         "verify_s": [0.0] * len(accepted)},
              "draft_s": 0.0, "verify_s": 0.0, "draft_entropy": None, "env": {}, "lossless": None,
              "imported_from": "spec_bench"}
    ar_tokens, ar_time = ar_baseline(c, method, turn)
    if ar_time:
        record.update(ar_new_tokens=ar_tokens, ar_wall_time=ar_time,
                      speedup=(record["new_tokens"] / record["wall_time"]) / (ar_tokens / ar_time))
    return record


def import_answers(path) -> list[dict]:
    """Read a Spec-Bench model_answer JSONL file as svbench-shaped records (one per question-turn-run).

    rounds.accepted = accept_lengths - 1; drafted counts and draft/verify times are not in the format
    (left 0). AR baselines come from the file's svbench object, else from an AR answer file analysed
    beside it (model_id with a 'vanilla' part, Spec-Bench's name for AR).
    """
    path = Path(path)
    if not path.is_file():
        raise SvbenchError(f"Spec-Bench answer file {str(path)!r} does not exist")
    records = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}, line {line_no}"
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise SvbenchError(f"{where}: not valid JSON ({exc})") from None
        check_answer(row, where)
        meta = row.get("svbench") or {}
        for i, c in enumerate(row["choices"]):
            run = (c.get("svbench") or {}).get("run", c.get("index", i))
            for turn, accept in enumerate(split_accept_lengths(c)):
                records.append(turn_record(row, meta, c, run, turn, accept))
    return records
