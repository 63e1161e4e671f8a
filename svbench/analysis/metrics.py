"""The analysis tables as DataFrames: one row per configuration (method, policy and whatever else varies).

Every speedup and tau comes from ``svbench.results.summarize`` / ``summarize_group`` (ALGORITHMS.md §7),
so a row equals the summary.json of the same records; a column ``X_ci`` beside ``X`` holds X's 95% interval
[lo, hi] (``svbench.results.bootstrap_ci``). Round 0 of a record is the prefill (nothing drafted).
"""
from __future__ import annotations

import itertools
import statistics

import numpy as np
import pandas as pd

from svbench.errors import SvbenchError
from svbench.results import bootstrap_ci, difference_of_ratios, ratio_of_means, summarize, summarize_group, unit_values

# One configuration. method and policy always label a row; the others only when they vary.
# (seed is not in config_hash but a summary.json holds one seed, so it is part of a configuration here.)
GROUP_KEY = ("method", "policy", "pair", "benchmark", "temperature", "max_new_tokens", "seed", "config_hash")
# Two configurations are compared only within one setting.
SETTING = ("pair", "benchmark", "temperature", "max_new_tokens")
POSITIONS = 8


def group(records: list[dict], key=GROUP_KEY) -> dict[tuple, list[dict]]:
    """Records by key, in first-seen order, except that lengths come in numeric order (sweep folders
    sort as text: 128, 2048, 512)."""
    out: dict[tuple, list[dict]] = {}
    for r in records:
        out.setdefault(tuple(r.get(k) for k in key), []).append(r)
    if "max_new_tokens" not in key:
        return out
    length = key.index("max_new_tokens")
    rest = [j for j, k in enumerate(key) if k not in ("max_new_tokens", "config_hash")]  # the hash has the length
    first: dict[tuple, int] = {}
    for k in out:
        first.setdefault(tuple(k[j] for j in rest), len(first))
    order = {k: n for n, k in enumerate(out)}
    return dict(sorted(out.items(), key=lambda kv: (first[tuple(kv[0][j] for j in rest)], kv[0][length] or 0,
                                                    order[kv[0]])))


def config_label(records: list[dict]) -> str:
    """The policy's parameters when a summary.json told them, else the config hash."""
    return records[0].get("policy_params") or str(records[0].get("config_hash"))


def config_column(frame: pd.DataFrame, groups: dict[tuple, list[dict]]) -> list[str] | None:
    """The config label per group, where groups alike in every other key field differ in config_hash
    (None where they never do): the policy/drafter parameters that differ between those groups (else the
    policy's parameters), or the hash where those do not tell them apart."""
    others = [c for c in frame.columns if c != "config_hash"]
    firsts = [rs[0] for rs in groups.values()]
    labels = [config_label(rs) for rs in groups.values()]
    buckets: dict[tuple, list[int]] = {}  # alike but for the length: one label per configuration across lengths
    for i, row in enumerate(frame.astype(str).itertuples(index=False)):
        buckets.setdefault(tuple(getattr(row, c) for c in others if c != "max_new_tokens"), []).append(i)
    for rows in buckets.values():  # label by the policy/drafter parameters that differ within the bucket
        params = [firsts[i].get("config_params") for i in rows]
        if len(rows) > 1 and all(params):
            differing = [k for k in dict.fromkeys(k for p in params for k in p)
                         if any(p.get(k) != params[0].get(k) for p in params)]
            if differing:
                for i, p in zip(rows, params):
                    labels[i] = ", ".join(f"{k.split('.', 1)[-1]}={p.get(k)}" for k in differing)
    alike: dict[tuple, dict[str, str]] = {}
    for row, label in zip(frame.astype(str).itertuples(index=False), labels):
        alike.setdefault(tuple(getattr(row, c) for c in others), {})[row.config_hash] = label
    if all(len(hashes) == 1 for hashes in alike.values()):
        return None
    if all(len(set(hashes.values())) == len(hashes) for hashes in alike.values()):
        return labels
    return frame["config_hash"].astype(str).tolist()


def label_frame(groups: dict[tuple, list[dict]], key=GROUP_KEY) -> pd.DataFrame:
    """Label columns: method, policy, then each other key field that tells groups apart."""
    frame = pd.DataFrame([dict(zip(key, k)) for k in groups], columns=list(key))
    keep = [c for c in key if c in ("method", "policy") or
            (c != "config_hash" and frame[c].astype(str).nunique() > 1)]
    if "config_hash" in key:
        config = config_column(frame, groups)
        if config is not None:
            frame["config_hash"] = config
            keep.append("config_hash")
    return frame[keep].rename(columns={"config_hash": "config", "max_new_tokens": "length", "temperature": "T"})


def with_labels(groups, rows: list[dict], key=GROUP_KEY) -> pd.DataFrame:
    return pd.concat([label_frame(groups, key), pd.DataFrame(rows)], axis=1)


def row_labels(groups: dict[tuple, list[dict]], leave_out=()) -> list[str]:
    """'method / policy (other varying fields)' per group: the tables' label columns as one string, less
    the columns in leave_out."""
    frame = label_frame(groups)
    extra = [c for c in frame.columns if c not in ("method", "policy", *leave_out)]
    labels = []
    for _, row in frame.iterrows():
        details = ", ".join(str(row[c]) if c == "config" else f"{c}={row[c]}" for c in extra)
        labels.append(f"{row['method']} / {row['policy']}" + (f" ({details})" if details else ""))
    return labels


def has_drafts(records: list[dict]) -> bool:
    """False for imported answers, which carry accept lengths but not what was drafted."""
    return any(d for r in records for d in r["rounds"]["drafted"])


def by_category(sd: list[dict], metric: str = "speedup") -> pd.DataFrame:
    """metric ('speedup' or 'tau') per category and overall, each with its 95% interval (column X_ci); the
    speedup table adds overall tau (the SVIP paper's Table 1 layout)."""
    groups = group(sd)
    categories = list(dict.fromkeys(r["category"] for r in sd))
    rows = []
    for rs in groups.values():
        s = summarize(rs)
        row = {}
        for c in [*categories, "overall"]:
            row.update({c: s[c][metric], f"{c}_ci": s[c][f"{metric}_ci"]} if c in s else {c: None, f"{c}_ci": None})
        if metric == "speedup":
            row.update(tau=s["overall"]["tau"], tau_ci=s["overall"]["tau_ci"])
        rows.append(row)
    return with_labels(groups, rows)


def speedup_by_category(sd: list[dict]) -> pd.DataFrame:
    return by_category(sd, "speedup")


def round_depths(record: dict) -> list[int]:
    """Draft depth per round: the drafted steps (one entropy each) for trees, the drafted count for chains."""
    entropy = record.get("draft_entropy")
    if entropy:
        return [len(h) for h in entropy]
    return list(record["rounds"]["drafted"])


def position_acceptance(records: list[dict], positions: int = POSITIONS) -> list[float | None]:
    """P(position i accepted | positions < i accepted), i = 1..positions, over rounds that drafted i deep."""
    pairs = [(d, a) for r in records for d, a in zip(round_depths(r), r["rounds"]["accepted"])]
    rates = []
    for i in range(1, positions + 1):
        reached = [a for d, a in pairs if d >= i and a >= i - 1]
        rates.append(sum(a >= i for a in reached) / len(reached) if reached else None)
    return rates


def per_position_acceptance(sd: list[dict]) -> pd.DataFrame:
    """position_acceptance per configuration (those with drafted counts recorded)."""
    groups = {k: rs for k, rs in group(sd).items() if has_drafts(rs)}
    rows = [dict(zip((str(i) for i in range(1, POSITIONS + 1)), position_acceptance(rs))) for rs in groups.values()]
    return with_labels(groups, rows)


def after_prefill(records: list[dict], key: str) -> list:
    """rounds[key] of every round after each record's prefill round (drafted counts, draft or verify seconds)."""
    return [x for r in records for x in r["rounds"][key][1:]]


def draft_lengths(records: list[dict]) -> list[int]:
    """Drafted count of every round after the prefill."""
    return after_prefill(records, "drafted")


def chain_token_outcomes(records: list[dict]) -> pd.DataFrame:
    """One row per TESTED drafted token of a chain round (one entropy per drafted token): its draft entropy
    and whether it was accepted given that the tokens before it were. Token i of a round is accepted when
    i < accepted, rejected when i == accepted; tokens after the first rejection were never tested and are
    left out."""
    rounds = pd.DataFrame([(h, a) for r in records
                           for h, d, a in zip(r.get("draft_entropy") or [], r["rounds"]["drafted"],
                                               r["rounds"]["accepted"]) if d and len(h) == d],
                          columns=["entropy", "accepted_len"])
    tokens = rounds.explode("entropy")
    position = tokens.groupby(level=0).cumcount()
    tested = position <= tokens["accepted_len"]
    return pd.DataFrame({"entropy": tokens["entropy"][tested].astype(float),
                         "accepted": (position < tokens["accepted_len"])[tested].astype(bool)}).reset_index(drop=True)


def acceptance_by_entropy(outcomes: pd.DataFrame, edges: np.ndarray, min_count: int = 5) -> pd.DataFrame:
    """Acceptance rate per entropy bin (bins with fewer than min_count drafted tokens left out)."""
    bins = pd.cut(outcomes["entropy"], edges, include_lowest=True)
    table = outcomes.groupby(bins, observed=True)["accepted"].agg(["mean", "count"])
    table["centre"] = [iv.mid for iv in table.index]
    return table[table["count"] >= min_count]


def decode_costs(records: list[dict]) -> tuple[float | None, float | None]:
    """(draft seconds per drafted token, verify seconds per round), over the rounds after the prefill;
    (None, None) for records without round times (imported answers)."""
    if not has_drafts(records) or any("verify_s" not in r["rounds"] for r in records):
        return None, None
    draft_s = sum(after_prefill(records, "draft_s"))
    drafted = sum(draft_lengths(records))
    verify = after_prefill(records, "verify_s")
    return (draft_s / drafted if drafted else None), (statistics.fmean(verify) if verify else None)


def efficiency(sd: list[dict]) -> pd.DataFrame:
    """Achieved vs ideal speedup.

    ideal = tau / (1 + c * mean_draft_len), c = t_draft / t_verify, where t_draft = mean draft time per
    drafted token and t_verify = mean verify time per round (rounds after the prefill); tau and
    mean_draft_len are summarize_group's. efficiency = achieved speedup / ideal. The ideal assumes a
    verify round costs one AR step and nothing else takes time.
    """
    groups = {k: rs for k, rs in group(sd).items() if has_drafts(rs)}
    rows = []
    for rs in groups.values():
        s = summarize_group(rs)
        t_draft, t_verify = decode_costs(rs)
        c = t_draft / t_verify if t_draft is not None and t_verify else None
        ideal = s["tau"] / (1 + c * s["mean_draft_len"]) if c is not None else None
        rows.append({"tau": s["tau"], "tau_ci": s["tau_ci"], "mean_draft_len": s["mean_draft_len"],
                     "t_draft_ms": t_draft * 1e3 if t_draft is not None else None,
                     "t_verify_ms": t_verify * 1e3 if t_verify is not None else None, "c": c, "ideal": ideal,
                     "achieved": s["speedup"], "achieved_ci": s["speedup_ci"],
                     "efficiency": s["speedup"] / ideal if ideal and s["speedup"] is not None else None})
    return with_labels(groups, rows)


def oracle_time(record: dict) -> float:
    """Time had each round drafted exactly its accepted tokens: every verify time, plus accepted tokens at
    this record's draft time per drafted token, plus the record's time outside draft and verify."""
    drafted = sum(record["rounds"]["drafted"])
    per_token = record["draft_s"] / drafted if drafted else 0.0
    other = max(record["wall_time"] - record["draft_s"] - record["verify_s"], 0.0)
    return record["verify_s"] + per_token * sum(record["rounds"]["accepted"]) + other


def is_chain(records: list[dict]) -> bool:
    """Every drafting round has one entropy per drafted token (a chain, not a tree)."""
    for r in records:
        entropy = r.get("draft_entropy")
        if entropy is None or any(d and len(h) != d for h, d in zip(entropy, r["rounds"]["drafted"])):
            return False
    return True


def oracle(sd: list[dict]) -> pd.DataFrame:
    """The oracle length policy's bound from greedy chain traces, beside the achieved speedup.

    oracle speedup = mean(new_tokens / oracle_time) / mean(AR tokens/s), Spec-Bench's convention.
    A round with accepted == drafted is censored: the draft might have agreed further, so the oracle's
    length there is a lower bound and its speedup is an estimate from below (given these rounds).
    """
    groups = {k: rs for k, rs in group(sd).items()
              if rs[0]["temperature"] == 0 and has_drafts(rs) and is_chain(rs)}
    rows = []
    for rs in groups.values():
        s = summarize_group(rs)
        drafting = [(d, a) for r in rs for d, a in zip(r["rounds"]["drafted"], r["rounds"]["accepted"]) if d]
        speed = statistics.fmean(r["new_tokens"] / oracle_time(r) for r in rs)
        rows.append({"achieved": s["speedup"], "achieved_ci": s["speedup_ci"],
                     "oracle": speed / s["ar_tokens_per_s"] if s["ar_tokens_per_s"] else None,
                     "draft_len": statistics.fmean(d for d, _ in drafting),
                     "oracle_len": statistics.fmean(a for _, a in drafting),
                     "wasted": 1 - sum(a for _, a in drafting) / sum(d for d, _ in drafting),
                     "censored": sum(a == d for d, a in drafting) / len(drafting)})
    return with_labels(groups, rows)


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def repeats(sd: list[dict]) -> pd.DataFrame:
    """Mean and sample std (ddof=1) over the repeated runs (`run` index) of overall speedup and tau; and
    speedup_all / tau_all: the statistic over every run's records together, with its 95% interval (runs of
    a question-turn resampled as one cluster)."""
    groups = group(sd)
    rows = []
    for rs in groups.values():
        per_run = [summarize_group(x) for x in group(rs, ("run",)).values()]
        speedup, speedup_std = mean_std([s["speedup"] for s in per_run])
        tau, tau_std = mean_std([s["tau"] for s in per_run])
        every = summarize_group(rs)
        rows.append({"runs": len(per_run), "speedup": speedup, "speedup_std": speedup_std,
                     "speedup_all": every["speedup"], "speedup_all_ci": every["speedup_ci"],
                     "tau": tau, "tau_std": tau_std, "tau_all": every["tau"], "tau_all_ci": every["tau_ci"]})
    return with_labels(groups, rows)


def speedup_length_table(by_length: pd.DataFrame) -> pd.DataFrame | None:
    """The SVIP Table 2 layout: one row per configuration, one column per generation length (speedup,
    and its interval in column '<length>_ci'), lengths in numeric order; None when fewer than two lengths are
    known. Rows without a length (imported answers) are left out. Never averages: two configurations with
    one label is an error."""
    known = by_length[by_length["length"].notna()]
    lengths = sorted({int(n) for n in known["length"]})
    if len(lengths) < 2:
        return None
    keys = ["series", "pair", "benchmark", "T"]
    rows: dict[tuple, dict] = {}
    for r in known.to_dict("records"):
        row = rows.setdefault(tuple(str(r[k]) for k in keys), {k: r[k] for k in keys})
        if str(int(r["length"])) in row:
            raise ValueError(f"two configurations are both labelled {r['series']!r} at length {r['length']}")
        row[str(int(r["length"]))] = r["speedup"]
        row[f"{int(r['length'])}_ci"] = r["speedup_ci"]
    table = pd.DataFrame(list(rows.values()), columns=keys + [c for n in lengths for c in (str(n), f"{n}_ci")])
    return table[[c for c in table.columns if c not in ("pair", "benchmark", "T") or table[c].astype(str).nunique() > 1]]


def speedup_by_length(sd: list[dict]) -> pd.DataFrame:
    """Overall speedup per configuration and max_new_tokens (long rows: series, pair, benchmark, T, length,
    speedup, speedup_ci). series = method / policy plus what tells configurations apart apart from the length
    (the differing policy/drafter parameters, the seed), so one series is one line across lengths."""
    groups = group(sd)
    series = row_labels(groups, leave_out=("length", "pair", "benchmark", "T"))
    rows = []
    for (key, rs), name in zip(groups.items(), series):
        k = dict(zip(GROUP_KEY, key))
        s = summarize_group(rs)
        rows.append({"series": name, "pair": k["pair"], "benchmark": k["benchmark"], "T": k["temperature"],
                     "length": k["max_new_tokens"], "speedup": s["speedup"], "speedup_ci": s["speedup_ci"]})
    return pd.DataFrame(rows)


def run_key(record: dict) -> tuple:
    """What pairs two configurations' records: the same question-turn in the same repeat."""
    return record["question_id"], record["turn"], record["run"]


def compare(a: list[dict], b: list[dict]) -> dict:
    """b against a over the (question_id, turn, run) both have (n): speedup and tau of each over those, the
    difference b - a with its 95% interval (bootstrap_ci: a question-turn's numbers for a and b resampled
    together, runs of a question-turn as one cluster) and a verdict (``verdict``), None without an interval;
    each side's decode_costs in ms over the same records (None for records without round times: imported
    answers)."""
    in_b = {run_key(r): r for r in b}
    common = [r for r in a if run_key(r) in in_b]
    common_b = [in_b[run_key(r)] for r in common]
    ua, ub = unit_values(common), unit_values(common_b)  # both sorted by the same key
    out = {"n": len(common)}
    for records, side in ((common, "a"), (common_b, "b")):  # the same work per round should cost the same
        t_draft, t_verify = decode_costs(records)
        out[f"t_draft_ms_{side}"] = None if t_draft is None else t_draft * 1e3
        out[f"t_verify_ms_{side}"] = None if t_verify is None else t_verify * 1e3
    for name, (x, y) in {"speedup": ("speed", "ar_speed"), "tau": ("tokens", "rounds")}.items():
        if not common or ua[y] is None or ub[y] is None:
            out.update({f"{name}_a": None, f"{name}_b": None, f"{name}_diff": None, f"{name}_diff_ci": None,
                        f"{name}_verdict": None})
            continue
        values = np.column_stack([ua[x], ua[y], ub[x], ub[y]])
        means = values.mean(axis=0)
        ci = bootstrap_ci(values, difference_of_ratios, ua["cluster"])
        out.update({f"{name}_a": float(ratio_of_means(means[:2])), f"{name}_b": float(ratio_of_means(means[2:])),
                    f"{name}_diff": float(difference_of_ratios(means)), f"{name}_diff_ci": ci,
                    f"{name}_verdict": None if ci is None else verdict(ci, len(set(ua["cluster"])))})
    return out


def compare_runs(a: list[dict], b: list[dict], name_a: str = "a", name_b: str = "b") -> pd.DataFrame:
    """compare(a, b) as a one-row table; a and b must each hold one configuration of one setting (else an error
    naming them), and share at least one question-turn."""
    for records, name in ((a, name_a), (b, name_b)):
        configurations = len(group(records))
        if configurations > 1:
            raise SvbenchError(f"{name} holds {configurations} configurations; compare takes one each")
    if any(a[0].get(k) != b[0].get(k) for k in SETTING):
        raise SvbenchError(f"{name_a} and {name_b} differ in their setting ({', '.join(SETTING)}): not comparable")
    row = compare(a, b)
    if row["n"] == 0:
        raise SvbenchError(f"{name_a} and {name_b} share no question-turn (question_id, turn, run)")
    columns = ["a", "b", "n", "speedup_a", "speedup_b", "speedup_diff", "speedup_diff_ci", "speedup_verdict",
               "tau_a", "tau_b", "tau_diff", "tau_diff_ci", "tau_verdict", "t_draft_ms_a", "t_draft_ms_b",
               "t_verify_ms_a", "t_verify_ms_b"]
    return pd.DataFrame([{"a": name_a, "b": name_b, **row}], columns=columns)


MIN_VERDICT_N = 5  # fewer question-turns than this: a bootstrap interval means little, no verdict


def verdict(ci, n_clusters: int) -> str:
    """'resolved' where the interval of a difference excludes 0, else 'within noise'; 'too few (n<5)' below
    MIN_VERDICT_N question-turns."""
    if n_clusters < MIN_VERDICT_N:
        return f"too few (n<{MIN_VERDICT_N})"
    return "resolved" if ci[0] > 0 or ci[1] < 0 else "within noise"


def comparisons(sd: list[dict]) -> pd.DataFrame:
    """compare() for every two configurations of one setting (pair, benchmark, T, length) that share a
    method (policy vs policy) or, failing that, a policy (method vs method). a, b: the rows' labels less the
    setting, which has its own columns where it varies. Same-method pairs first."""
    groups = group(sd)
    setting = {"pair": "pair", "benchmark": "benchmark", "temperature": "T", "max_new_tokens": "length"}
    labels = dict(zip(groups, row_labels(groups, leave_out=tuple(setting.values()))))
    rows = []
    for ka, kb in itertools.combinations(groups, 2):
        da, db = dict(zip(GROUP_KEY, ka)), dict(zip(GROUP_KEY, kb))
        if any(da[k] != db[k] for k in SETTING):
            continue
        shared = next((k for k in ("method", "policy") if da[k] == db[k]), None)
        if shared is not None:
            rows.append({**{setting[k]: da[k] for k in SETTING}, "same": f"{shared} {da[shared]}",
                         "a": labels[ka], "b": labels[kb], **compare(groups[ka], groups[kb])})
    columns = [*setting.values(), "same", "a", "b", "n", "speedup_a", "speedup_b", "speedup_diff", "speedup_diff_ci",
               "speedup_verdict", "tau_diff", "tau_diff_ci", "tau_verdict"]
    frame = pd.DataFrame(rows, columns=columns)
    frame = frame.drop(columns=[c for c in setting.values() if frame[c].astype(str).nunique() <= 1])
    return frame.sort_values("same", key=lambda s: ~s.str.startswith("method"), kind="stable", ignore_index=True)
