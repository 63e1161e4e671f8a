"""The records an analysis reads: run dirs, sweep dirs, records files and Spec-Bench model_answer files.

A file is told apart by its first line: a svbench record has the record-key fields, a Spec-Bench answer
has ``question_id`` and ``choices``. Records are deduplicated on their key (a run dir passed together
with the sweep dir above it counts once).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from svbench.errors import SvbenchError
from svbench.results import RECORD_KEY, read_records, record_key

# An AR baseline is matched to a record that lacks one (imported answers) on these fields.
BASELINE_MATCH = ("pair", "benchmark", "question_id", "turn", "seed", "run", "temperature", "max_new_tokens")


def record_files(path) -> list[Path]:
    """A run dir -> its records.jsonl; a sweep dir -> every records.jsonl below it; a file -> itself."""
    path = Path(path).expanduser()
    if not path.exists():
        raise SvbenchError(f"{str(path)!r} does not exist (expected a run dir, a sweep dir or a records file)")
    if path.is_file():
        return [path]
    if (path / "records.jsonl").is_file():
        return [path / "records.jsonl"]
    found = sorted(path.glob("**/records.jsonl"))
    if not found:
        raise SvbenchError(f"no records.jsonl in or under {str(path)!r}")
    return found


def file_kind(path: Path) -> str:
    """'records' or 'specbench', from the first non-empty line."""
    try:
        with open(path, encoding="utf-8") as fh:
            first = next((line for line in fh if line.strip()), None)
    except UnicodeDecodeError:
        first = "\0"
    if first is None:
        raise SvbenchError(f"{str(path)!r} is empty: no records to analyse")
    try:
        row = json.loads(first)
    except ValueError:
        row = None
    if isinstance(row, dict) and "question_id" in row and "choices" in row:
        return "specbench"
    if isinstance(row, dict) and all(k in row for k in RECORD_KEY):
        return "records"
    raise SvbenchError(f"{str(path)!r} is neither a svbench records file (records.jsonl) "
                       f"nor a Spec-Bench model_answer JSONL file")


# generation settings in config_hash that are not a comparison's SETTING (svbench.analysis.metrics)
RUN_SETTINGS = ("dtype", "device", "attention", "top_k", "top_p", "prompt_template", "threads")


def config_labels(records_path: Path) -> dict[str, tuple[str, dict]]:
    """config_hash -> (the policy's parameters as text 'gamma=3', every policy and drafter parameter and the
    pair's draft folders as a dict {'policy.gamma': 3, 'drafter.top_k': 4, 'pair.eagle.path': ...}), from the
    summary.json beside a records file. Labels name only those that differ (metrics.config_column), so a
    candidate draft run with pair.eagle.path=... is told apart from the shipped one by its folder."""
    summary = records_path.parent / "summary.json"
    try:
        data = json.loads(summary.read_text())
        policy = {k: v for k, v in data["config"]["policy"].items() if k not in ("name", "_target_")}
        drafter = (data["config"].get("method") or {}).get("drafter") or {}
        drafts = {k: v["path"] for k, v in (data["config"].get("pair") or {}).items()
                  if k != "target" and isinstance(v, dict) and v.get("path")}
        fallback = data["config"].get("ar_fallback") or {}
        run = {k: data["config"].get(k) for k in RUN_SETTINGS}  # labelled too when they differ (dtype=float32)
        run["benchmark_file"] = (data["config"].get("benchmark") or {}).get("path")
        params = {**{f"run.{k}": v for k, v in run.items()},
                  **{f"policy.{k}": v for k, v in policy.items()},
                  **{f"drafter.{k}": v for k, v in drafter.items() if k != "_target_"},
                  **{f"pair.{k}.path": v for k, v in drafts.items()},
                  **({"ar_fallback": "on"} if fallback.get("enabled") else {})}
        return {data["config_hash"]: (", ".join(f"{k}={v}" for k, v in policy.items()), params)}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def read_file(path: Path) -> list[dict]:
    if file_kind(path) == "specbench":
        from svbench.analysis.specbench import import_answers

        return import_answers(path)
    records = read_records(path)
    labels = config_labels(path)
    for r in records:
        if r["config_hash"] in labels:
            r["policy_params"], r["config_params"] = labels[r["config_hash"]]
    return records


def attach_baselines(records: list[dict]) -> None:
    """Give records without an AR baseline (imported answers) the matching AR record's tokens and time."""
    baselines: dict[tuple, list[dict]] = {}
    for r in records:
        if r["method"] == "ar":
            baselines.setdefault(tuple(r.get(k) for k in BASELINE_MATCH), []).append(r)
    for r in records:
        if r["method"] == "ar" or r.get("ar_wall_time"):
            continue
        match = baselines.get(tuple(r.get(k) for k in BASELINE_MATCH), [])
        if len(match) > 1:
            raise SvbenchError(f"several AR baselines match {r['method']} question {r['question_id']} turn "
                               f"{r['turn']}; pass only one baseline")
        if match:
            ar = match[0]
            r.update(ar_new_tokens=ar["new_tokens"], ar_wall_time=ar["wall_time"])
            r["speedup"] = (r["new_tokens"] / r["wall_time"]) / (ar["new_tokens"] / ar["wall_time"])


def load_records(paths) -> list[dict]:
    """Every record under the given paths, each once, with AR baselines attached where missing."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    records, seen, clashes = [], {}, []
    for path in paths:
        for file in record_files(path):
            for r in read_file(file):
                key = record_key(r)
                if key not in seen:
                    seen[key] = (file, r.get("wall_time"))
                    records.append(r)
                elif seen[key][1] != r.get("wall_time") and r["method"] != "ar":  # another measurement of the
                    # same configuration and turn (AR: every method folder times its own baseline, one is kept)
                    clashes.append((seen[key][0], file))
    if clashes:
        print(f"svbench: warning: {len(clashes)} record(s) of {clashes[0][1]} repeat question-turns of the same "
              f"configuration already read from {clashes[0][0]} and were left out (the first file's are kept); "
              f"to use both, run them with different run indices (runs=) or analyse them apart", file=sys.stderr)
    attach_baselines(records)
    return records


def sd_records(records: list[dict], paths=()) -> list[dict]:
    """The speculative-decoding records (every method but AR); none is an error."""
    sd = [r for r in records if r["method"] != "ar"]
    if not sd:
        where = ", ".join(str(p) for p in paths) or "the given records"
        raise SvbenchError(f"no speculative-decoding records found in {where} (only AR baselines)")
    return sd
