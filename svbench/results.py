"""Records (one per question-turn), the append-only JSONL store, and the summary metrics (ALGORITHMS.md §7)."""
from __future__ import annotations

import json
import os
import statistics
import sys
from pathlib import Path

from svbench.errors import SvbenchError

# A record's identity: resume is a set difference on these keys.
RECORD_KEY = ("method", "policy", "pair", "benchmark", "question_id", "turn", "seed", "run", "config_hash")
SUMMARY_METRICS = ("speedup", "speedup_pooled", "tau", "acceptance_rate", "mean_draft_len", "tokens_per_s",
                   "ar_tokens_per_s", "lossless", "n")


def record_key(record: dict) -> tuple:
    return tuple(record[k] for k in RECORD_KEY)


def read_records(path: Path, repair: bool = False) -> list[dict]:
    """Read a records.jsonl. A torn LAST line (a job killed mid-write) is reported and dropped (and cut
    from the file when repair=True, so later appends start on a clean line); a bad line elsewhere is an error."""
    path = Path(path)
    if not path.is_file():
        raise SvbenchError(f"records file {str(path)!r} does not exist")
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    records, good_bytes = [], 0
    for line_no, line in enumerate(lines, start=1):
        is_last = line_no == len(lines)  # no trailing newline: only an interrupted write leaves this
        if not line.strip():
            good_bytes += len(line) + 1
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or any(k not in record for k in RECORD_KEY):
                raise ValueError("not a svbench record")
            if is_last:  # the record and its newline are written in one call: the write did not finish
                raise ValueError("no trailing newline")
        except ValueError as exc:
            if is_last:
                print(f"svbench: warning: {path}, line {line_no}: dropping a torn last record ({exc}); "
                      f"it will be re-run", file=sys.stderr)
                if repair:
                    with open(path, "r+b") as fh:
                        fh.truncate(good_bytes)
                break
            raise SvbenchError(f"{path}, line {line_no}: corrupt record ({exc}); fix or remove that line") from None
        records.append(record)
        good_bytes += len(line) + 1
    return records


class RecordStore:
    """Append-only records.jsonl: each record is flushed and fsync'ed before the next question runs."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.records = read_records(self.path, repair=True) if self.path.exists() else []
        self.by_key = {record_key(r): r for r in self.records}

    def append(self, record: dict) -> None:
        key = record_key(record)
        if key in self.by_key:
            raise RuntimeError(f"duplicate record {key}")  # a bug, not a user error
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, separators=(",", ":")) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.records.append(record)
        self.by_key[key] = record


def _speed(tokens, seconds):
    return tokens / seconds if seconds > 0 else 0.0


def summarize_group(records: list[dict]) -> dict:
    """Metrics of one group of records of one method (ALGORITHMS.md §7)."""
    speeds = [_speed(r["new_tokens"], r["wall_time"]) for r in records]
    with_ar = [r for r in records if r.get("ar_wall_time")]
    drafted = [d for r in records for d in r["rounds"]["drafted"]]
    accepted = [a for r in records for a in r["rounds"]["accepted"]]
    out = {
        "n": len(records),
        "tokens_per_s": statistics.fmean(speeds) if speeds else 0.0,
        "tau": statistics.fmean(a + 1 for a in accepted) if accepted else None,  # accepted drafts + 1 target token
        "acceptance_rate": (sum(accepted) / sum(drafted)) if sum(drafted) else None,
        "mean_draft_len": statistics.fmean(drafted) if drafted else None,
        "lossless": sum(1 for r in records if r.get("lossless") is True),
        "speedup": None, "speedup_pooled": None, "ar_tokens_per_s": None,
    }
    if with_ar and len(with_ar) == len(records):
        ar_speeds = [_speed(r["ar_new_tokens"], r["ar_wall_time"]) for r in records]
        out["ar_tokens_per_s"] = statistics.fmean(ar_speeds)
        out["speedup"] = out["tokens_per_s"] / out["ar_tokens_per_s"]  # Spec-Bench: mean speed / mean AR speed
        pooled = _speed(sum(r["new_tokens"] for r in records), sum(r["wall_time"] for r in records))
        ar_pooled = _speed(sum(r["ar_new_tokens"] for r in records), sum(r["ar_wall_time"] for r in records))
        out["speedup_pooled"] = pooled / ar_pooled if ar_pooled else None
    return out


def summarize(records: list[dict]) -> dict[str, dict]:
    """Per category (in first-seen order) and 'overall'."""
    categories: dict[str, list[dict]] = {}
    for r in records:
        categories.setdefault(r["category"], []).append(r)
    summary = {cat: summarize_group(rs) for cat, rs in categories.items()}
    summary["overall"] = summarize_group(records)
    return summary


def format_summary(summary: dict[str, dict]) -> str:
    import pandas as pd

    frame = pd.DataFrame(summary).T[list(SUMMARY_METRICS)]
    fmt = {k: (lambda v: "-" if v is None or v != v else f"{v:.3f}") for k in SUMMARY_METRICS}
    fmt.update(lossless=lambda v: f"{int(v)}", n=lambda v: f"{int(v)}")
    return frame.to_string(formatters=fmt)
