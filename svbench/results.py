"""Records (one per question-turn), the append-only JSONL store, and the summary metrics (ALGORITHMS.md §7)."""
from __future__ import annotations

import json
import os
import statistics
import sys
from pathlib import Path

import numpy as np
from scipy.special import ndtr, ndtri

from svbench.errors import SvbenchError

# A record's identity: resume is a set difference on these keys.
RECORD_KEY = ("method", "policy", "pair", "benchmark", "question_id", "turn", "seed", "run", "config_hash")
AGREEMENT = ("exact", "tie", "mismatch")
PRINTED_METRICS = ("speedup", "tau", "acceptance_rate", "mean_draft_len", "tokens_per_s", "ar_tokens_per_s")
# Intervals: BCa bootstrap over question-turns, fixed seed so that summary.json is reproducible.
LEVEL, RESAMPLES, SEED = 0.95, 2000, 0


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


def resample_weights(rng: np.random.Generator, codes: np.ndarray, resamples: int) -> np.ndarray:
    """(resamples, units) counts of a two-level bootstrap: clusters drawn with replacement, then, for each
    cluster drawn, its units drawn with replacement (as many as it has). Units of one cluster adjacent in
    codes order or not; one unit per cluster is the ordinary bootstrap."""
    n_clusters = codes.max() + 1
    sizes = np.bincount(codes)
    picks = rng.multinomial(n_clusters, np.full(n_clusters, 1 / n_clusters), size=resamples)  # (B, clusters)
    order = np.argsort(codes, kind="stable")
    starts = np.cumsum(sizes) - sizes
    weights = np.zeros((resamples, len(codes)))
    for m in np.unique(sizes):  # m units per cluster drawn k times = m * k draws among its m units
        chosen = np.flatnonzero(sizes == m)
        members = order[starts[chosen][:, None] + np.arange(m)]  # (clusters of size m, m)
        counts = picks[:, chosen, None] if m == 1 else rng.multinomial(picks[:, chosen] * m, np.full(m, 1 / m))
        weights[:, members] = counts
    return weights


def bootstrap_ci(values, statistic, clusters=None, level: float = LEVEL, resamples: int = RESAMPLES,
                 seed: int = SEED) -> list[float] | None:
    """BCa bootstrap interval [lo, hi] of statistic(column means of values).

    values: (units, k); a unit's k columns are resampled together (paired). clusters: a label per unit;
    units that share one (repeated runs of a question-turn) are resampled two-level (resample_weights), and
    the BCa acceleration comes from the leave-one-cluster-out jackknife. None: each unit is its own cluster.
    statistic maps means of shape (..., k) to shape (...). Fixed seed: the same values in the same order
    give the same interval. None with fewer than 2 clusters or a resample whose statistic is not finite.
    """
    values = np.asarray(values, dtype=float)
    index: dict = {}
    codes = np.array([index.setdefault(c, len(index)) for c in (range(len(values)) if clusters is None else clusters)],
                     dtype=int)
    n_clusters = len(index)
    if n_clusters < 2:
        return None

    def stat(weights):
        return statistic(weights @ values / weights.sum(axis=-1, keepdims=True))

    theta = stat(np.ones(len(values)))
    boot = stat(resample_weights(np.random.default_rng(seed), codes, resamples))
    jack = stat((codes[None, :] != np.arange(n_clusters)[:, None]).astype(float))
    if not (np.isfinite(theta) and np.isfinite(boot).all() and np.isfinite(jack).all()):
        return None
    d = jack.mean() - jack
    a = (d ** 3).sum() / (6 * (d ** 2).sum() ** 1.5) if (d ** 2).sum() > 0 else 0.0  # acceleration
    p = ((boot < theta).mean() + (boot <= theta).mean()) / 2
    z0 = ndtri(np.clip(p, 0.5 / resamples, 1 - 0.5 / resamples))  # bias correction
    z = ndtri(np.array([(1 - level) / 2, (1 + level) / 2]))
    lo, hi = np.quantile(boot, ndtr(z0 + (z0 + z) / (1 - a * (z0 + z))))
    return [float(lo), float(hi)]


def ratio_of_means(means):
    """means[..., 0] / means[..., 1]: speedup (speed / AR speed) and tau (tokens / rounds)."""
    return means[..., 0] / means[..., 1]


def difference_of_ratios(means):
    """ratio of columns 2, 3 minus ratio of columns 0, 1: configuration b minus configuration a."""
    return means[..., 2] / means[..., 3] - means[..., 0] / means[..., 1]


def unit_values(records: list[dict]) -> dict:
    """Per record, sorted by (question_id, turn, run) so that intervals do not depend on record order:
    speed, ar_speed (None without an AR baseline), tokens (accepted + 1 summed over rounds), rounds, and
    its question-turn (the bootstrap's cluster)."""
    records = sorted(records, key=lambda r: (str(r["question_id"]), r["turn"], r["run"]))
    with_ar = all(r.get("ar_wall_time") for r in records)
    return {"speed": [_speed(r["new_tokens"], r["wall_time"]) for r in records],
            "ar_speed": [_speed(r["ar_new_tokens"], r["ar_wall_time"]) for r in records] if with_ar else None,
            "tokens": [sum(a + 1 for a in r["rounds"]["accepted"]) for r in records],
            "rounds": [len(r["rounds"]["accepted"]) for r in records],
            "cluster": [(r["question_id"], r["turn"]) for r in records]}


def summarize_group(records: list[dict]) -> dict:
    """Metrics of one group of records of one method (ALGORITHMS.md §7), with 95% intervals for speedup and
    tau (bootstrap_ci over question-turns; repeated runs of a question-turn resampled as one cluster)."""
    speeds = [_speed(r["new_tokens"], r["wall_time"]) for r in records]
    with_ar = [r for r in records if r.get("ar_wall_time")]
    drafted = [d for r in records for d in r["rounds"]["drafted"]]
    accepted = [a for r in records for a in r["rounds"]["accepted"]]
    units = unit_values(records)
    out = {
        "n": len(records),
        "tokens_per_s": statistics.fmean(speeds) if speeds else 0.0,
        "tau": statistics.fmean(a + 1 for a in accepted) if accepted else None,  # accepted drafts + 1 target token
        "tau_ci": (bootstrap_ci(np.column_stack([units["tokens"], units["rounds"]]), ratio_of_means,
                                units["cluster"]) if accepted else None),
        "acceptance_rate": (sum(accepted) / sum(drafted)) if sum(drafted) else None,
        "mean_draft_len": statistics.fmean(drafted) if drafted else None,
        "lossless": sum(1 for r in records if r.get("lossless") is True),
        # greedy ids vs AR (svbench.runner.divergence): identical / a float32 near-tie / a real difference
        **{a: sum(1 for r in records if r.get("agreement") == a) for a in AGREEMENT},
        "speedup": None, "speedup_ci": None, "speedup_pooled": None, "ar_tokens_per_s": None,
    }
    if with_ar and len(with_ar) == len(records):
        ar_speeds = [_speed(r["ar_new_tokens"], r["ar_wall_time"]) for r in records]
        out["ar_tokens_per_s"] = statistics.fmean(ar_speeds)
        out["speedup"] = out["tokens_per_s"] / out["ar_tokens_per_s"]  # Spec-Bench: mean speed / mean AR speed
        out["speedup_ci"] = bootstrap_ci(np.column_stack([units["speed"], units["ar_speed"]]), ratio_of_means,
                                         units["cluster"])
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


def with_interval(value, ci, digits: int = 3) -> str:
    """'1.234 [1.100, 1.350]'; the value alone without an interval; '-' without a value."""
    if value is None or value != value:
        return "-"
    text = f"{value:.{digits}f}"
    return text + (f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if isinstance(ci, (list, tuple)) else "")


def format_summary(summary: dict[str, dict]) -> str:
    """The summary as a text table: speedup and tau with their 95% intervals ('-' for none), the other
    means, and how many records are exact / near-tie / mismatch against AR's ids (greedy)."""
    import pandas as pd

    counts = ("n",) + AGREEMENT
    frame = pd.DataFrame({name: {**{k: with_interval(m[k], m.get(f"{k}_ci")) for k in PRINTED_METRICS},
                                 **{k: str(m.get(k, "-")) for k in counts}} for name, m in summary.items()}).T
    return frame.to_string()
