"""The papers' claims, checked on the records of SVIP Tables 1-4 (experiments/paper_tables.sh).

    python -m svbench.analysis claims results/experiments --pair smollm2 --out results/paper_claims_smollm2.md

Each claim says configuration b beats configuration a (speedup over AR; both timed against the same AR
baseline). The verdict comes from the paired 95% interval of b - a (``metrics.compare``): **agrees** when it
lies above 0, **disagrees** when below, else **within noise** (or **too few** under 5 question-turns), with
the number of question-turns that would resolve a difference of the measured size (interval width taken to
shrink as 1/sqrt(n): n * (half-width / |difference|)^2, a rough guide). Claims whose configurations were not
run say so.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from svbench.analysis import metrics
from svbench.analysis.inputs import load_records
from svbench.analysis.tables import markdown
from svbench.config import CONF_DIR
from svbench.errors import SvbenchError
from svbench.results import bootstrap_ci, summarize_group, unit_values, with_interval

TABLES = ("svip_table1", "svip_table2", "svip_table3", "svip_table4")
CAPTION = ("b - a: speedup of b minus speedup of a over the question-turns both have, each against its own AR "
           "baseline, with its paired 95% BCa bootstrap interval (metrics.compare). agrees / disagrees: the interval "
           "lies above / below 0; within noise / too few (under 5 question-turns): it does not exclude 0, with about "
           "how many question-turns would resolve a difference of this size (interval width ~ 1/sqrt(n)).")


@dataclass(frozen=True)
class Config:
    """One configuration of the paper tables: its method (a conf/method name: eagle2 = the official tree,
    eagle2_cpu = the CPU tree), its policy, and for Table 2 its length."""
    method: str
    policy: str
    length: int | None = None  # None: Spec-Bench tables (one length); Table 2: tokens generated

    def label(self) -> str:
        return f"{self.method} + {self.policy}" + (f" @ {self.length}" if self.length else "")


@dataclass(frozen=True)
class Claim:
    text: str      # what the paper says, as "b > a"
    source: str    # where it says it
    papers: str    # the papers' numbers
    a: Config
    b: Config
    long_form: bool = False  # Table 2's records (MT-Bench long-form) instead of Spec-Bench's


def paper_claims(lengths: list[int]) -> list[Claim]:
    """The claims of SVIP Tables 1-4, the GliDe/CaPE paper and the EAGLE-2/-3 papers (Spec-Bench tables), and
    SVIP > fixed at each of Table 2's lengths."""
    vanilla, glide, cape = "vanilla_sd", "glide", "glide_cape"
    claims = [
        Claim("SVIP > fixed length, vanilla SD", "SVIP Table 1", "1.42->1.63 (Pythia), 1.07->1.29 (Qwen2.5), "
              "2.34->2.83 (LLaMA-3)", Config(vanilla, "fixed"), Config(vanilla, "svip")),
        Claim("heuristic > fixed length, vanilla SD", "SVIP Table 1", "1.42->1.53, 1.07->1.07, 2.34->2.76",
              Config(vanilla, "fixed"), Config(vanilla, "heuristic")),
        Claim("SVIP > heuristic, vanilla SD", "SVIP Table 1", "1.53->1.63, 1.07->1.29, 2.76->2.83",
              Config(vanilla, "heuristic"), Config(vanilla, "svip")),
    ]
    for n in lengths:
        claims.append(Claim(f"SVIP > fixed length, long-form, {n} tokens", "SVIP Table 2",
                            "8K: 0.87->1.41 (Pythia), 1.04->1.35 (Qwen2.5), 1.94->2.02 (LLaMA-3)",
                            Config(vanilla, "fixed", n), Config(vanilla, "svip", n), long_form=True))
    if lengths:
        claims.append(Claim(f"SVIP > heuristic, long-form, {max(lengths)} tokens", "SVIP Table 2", "",
                            Config(vanilla, "heuristic", max(lengths)), Config(vanilla, "svip", max(lengths)),
                            long_form=True))
    claims += [
        Claim("SVIP > fixed, GliDe", "SVIP Table 3", "1.95->2.02 (Vicuna-7B)", Config(glide, "fixed"),
              Config(glide, "svip")),
        Claim("SVIP > fixed, GliDe + CaPE", "SVIP Table 3", "2.40->2.52 (Vicuna-7B)", Config(cape, "fixed"),
              Config(cape, "svip")),
        Claim("CaPE > GliDe, fixed", "GliDe/CaPE paper; SVIP Table 3", "1.95 vs 2.40 (Vicuna-7B)",
              Config(glide, "fixed"), Config(cape, "fixed")),
        Claim("CaPE > GliDe, SVIP", "SVIP Table 3", "2.02 vs 2.52 (Vicuna-7B)", Config(glide, "svip"),
              Config(cape, "svip")),
        Claim("GliDe > vanilla SD (glimpsing the target's cache), SVIP", "GliDe/CaPE paper", "GliDe raises τ over "
              "the same draft without the glimpse", Config(vanilla, "svip"), Config(glide, "svip")),
        Claim("SVIP > fixed, EAGLE-2 (official tree)", "SVIP Table 4", "2.58->2.73 (Vicuna-7B), 3.10->3.16 "
              "(LLaMA-2-Chat-7B)", Config("eagle2", "fixed"), Config("eagle2", "svip")),
        Claim("SVIP > fixed, EAGLE-2 (CPU tree)", "SVIP Table 4 (svbench's tree)", "as above",
              Config("eagle2_cpu", "fixed"), Config("eagle2_cpu", "svip")),
        Claim("EAGLE-2 > GliDe + CaPE, SVIP", "Spec-Bench leaderboard, EAGLE-2 paper", "2.36x vs CaPE-class "
              "methods lower", Config(cape, "svip"), Config("eagle2_cpu", "svip")),
        Claim("EAGLE-2 > vanilla SD, SVIP", "Spec-Bench leaderboard", "2.36x vs SpS 1.52x (Vicuna-7B)",
              Config(vanilla, "svip"), Config("eagle2_cpu", "svip")),
        Claim("SVIP > fixed, EAGLE-3 (CPU tree)", "svbench (no paper combines them)", "",
              Config("eagle3_cpu", "fixed"), Config("eagle3_cpu", "svip")),
        Claim("EAGLE-3 > EAGLE-2, SVIP, CPU tree", "EAGLE-3 paper", "about 1.4x EAGLE-2's speedup",
              Config("eagle2_cpu", "svip"), Config("eagle3_cpu", "svip")),
        Claim("EAGLE-3 > EAGLE-2, fixed, official tree", "EAGLE-3 paper", "3.02x vs 2.46x (Spec-Bench, Vicuna-13B)",
              Config("eagle2", "fixed"), Config("eagle3", "fixed")),
    ]
    return claims


@functools.cache
def method_conf(name: str) -> tuple[str, dict]:
    """(the method name its records carry, its drafter parameters) of method=<name> as Hydra composes it
    (e.g. eagle2_cpu: eagle2's defaults with a smaller tree)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        method = OmegaConf.to_container(compose(config_name="config", overrides=[f"method={name}"]).method,
                                        resolve=True)
    return method["name"], {k: v for k, v in (method.get("drafter") or {}).items() if k != "_target_"}


def runs_method(record: dict, method: str) -> bool:
    """Whether a record was run with conf/method/<method>: its method name, and every drafter parameter its
    summary.json told (record["config_params"]) equal to the conf's."""
    name, drafter = method_conf(method)
    told = record.get("config_params") or {}
    return record["method"] == name and all(told[f"drafter.{k}"] == v for k, v in drafter.items()
                                            if f"drafter.{k}" in told)


def conf_name(record: dict) -> str:
    """The conf/method name a record was run with (eagle2_cpu, not the eagle2 its record says), else its
    method name (e.g. a drafter parameter overridden on the command line)."""
    return next((m for m in sorted(p.stem for p in (CONF_DIR / "method").glob("*.yaml")) if runs_method(record, m)),
                record["method"])


def select(records: list[dict], config: Config) -> list[dict]:
    """The records of one configuration; several configurations (config hashes) under one label is an error."""
    chosen = [r for r in records if r["policy"] == config.policy and runs_method(r, config.method)
              and (config.length is None or r["max_new_tokens"] == config.length)]
    hashes = sorted({r["config_hash"] for r in chosen})
    if len(hashes) > 1:
        raise SvbenchError(f"{config.label()}: {len(hashes)} configurations ({', '.join(hashes)}) in the records; "
                           f"keep one run of each configuration (move the older records away)")
    return chosen


def needed_n(n: int, diff: float, ci) -> str:
    """Question-turns that would resolve a difference of this size (interval width ~ 1/sqrt(n))."""
    half = (ci[1] - ci[0]) / 2
    if diff == 0:
        return "no sample size (difference 0)"
    return f"~{max(metrics.MIN_VERDICT_N, math.ceil(n * (half / abs(diff)) ** 2))} question-turns would resolve it"


def verdict(result: dict) -> str:
    """agrees / disagrees / within noise / too few for the claim b > a, from compare()'s speedup difference."""
    ci, diff, n = result["speedup_diff_ci"], result["speedup_diff"], result["n"]
    if ci is None:
        return "no interval (fewer than 2 question-turns)"
    if result["speedup_verdict"] == "resolved":
        return "**agrees**" if diff > 0 else "**disagrees**"
    return f"{result['speedup_verdict']}: {needed_n(n, diff, ci)}"


def signed_interval(x, ci) -> str:
    """A difference with its interval, signs shown: '+0.132 [+0.075, +0.157]'."""
    return f"{x:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci is not None else with_interval(x, None)


def claim_row(claim: Claim, records: list[dict]) -> list[str]:
    a, b = select(records, claim.a), select(records, claim.b)
    head = [claim.text, claim.source, claim.papers or "-"]
    missing = [c.label() for c, rs in ((claim.a, a), (claim.b, b)) if not rs]
    if missing:
        return head + [f"not run: {', '.join(missing)}", "-", "-", "-"]
    settings = [{k: r[k] for k in metrics.SETTING} for r in (a[0], b[0])]
    if settings[0] != settings[1]:  # e.g. tables run at different lengths: paired numbers would mislead
        differ = ", ".join(f"{k} {settings[0][k]} vs {settings[1][k]}" for k in metrics.SETTING
                           if settings[0][k] != settings[1][k])
        return head + [f"not comparable: {differ}", "-", "-", "-"]
    r = metrics.compare(a, b)
    return head + [f"{with_interval(r['speedup_a'], None)} -> {with_interval(r['speedup_b'], None)} (n={r['n']})",
                   signed_interval(r["speedup_diff"], r["speedup_diff_ci"]),
                   f"{with_interval(r['tau_a'], None, 2)} -> {with_interval(r['tau_b'], None, 2)}", verdict(r)]


def gain_growth(records: list[dict], short: int, long: int) -> dict | None:
    """(svip - fixed speedup at `long`) - (the same at `short`), paired by question-turn across the lengths,
    with its 95% interval; None when a configuration is missing."""
    parts = [select(records, Config("vanilla_sd", policy, n)) for n in (long, short) for policy in ("svip", "fixed")]
    if not all(parts):
        return None
    keys = set.intersection(*({metrics.run_key(r) for r in rs} for rs in parts))
    columns, clusters = [], None
    for rs in parts:  # unit_values sorts by (question_id, turn, run): row i is one question-turn in every part
        units = unit_values([r for r in rs if metrics.run_key(r) in keys])
        columns += [units["speed"], units["ar_speed"]]
        assert clusters is None or units["cluster"] == clusters, "parts not aligned by question-turn"
        clusters = units["cluster"]

    def statistic(m):  # (svip_L - fixed_L) - (svip_S - fixed_S), each a speedup = speed / AR speed
        return (m[..., 0] / m[..., 1] - m[..., 2] / m[..., 3]) - (m[..., 4] / m[..., 5] - m[..., 6] / m[..., 7])

    values = np.column_stack(columns)
    return {"n": len(keys), "diff": float(statistic(values.mean(axis=0))),
            "ci": bootstrap_ci(values, statistic, clusters), "n_clusters": len(set(clusters))}


def growth_row(records: list[dict], lengths: list[int]) -> list[str]:
    short, long = min(lengths), max(lengths)
    head = [f"SVIP's gain over fixed grows with length ({short} -> {long} tokens)", "SVIP Table 2",
            "Const -> SVIP gains larger at 8K than on Spec-Bench"]
    g = gain_growth(records, short, long)
    if g is None:
        return head + ["not run", "-", "-", "-"]
    ci = g["ci"]
    result = {"speedup_diff": g["diff"], "speedup_diff_ci": ci, "n": g["n"],
              "speedup_verdict": None if ci is None else metrics.verdict(ci, g["n_clusters"])}
    return head + [f"gain difference (n={g['n']})", signed_interval(g["diff"], ci), "-", verdict(result)]


def best_row(records: list[dict], goal: float) -> list[str]:
    groups = metrics.group(records)
    best_key, best = max(((k, summarize_group(rs)) for k, rs in groups.items()), key=lambda kv: kv[1]["speedup"] or 0)
    ci = best["speedup_ci"]
    key = dict(zip(metrics.GROUP_KEY, best_key))
    label = f"{conf_name(groups[best_key][0])} + {key['policy']} ({key['max_new_tokens']} tokens)"
    if ci is None:
        state = "no interval"
    else:
        state = "**reached**" if ci[0] >= goal else "**not reached**" if ci[1] < goal else "within noise"
    return [f"best method >= {goal:.1f}x AR on the Spec-Bench subset", "issue 16's goal", "1.0-3.2x on GPUs",
            f"{label}: {with_interval(best['speedup'], ci)} (n={best['n']})", "-", with_interval(best["tau"], None, 2),
            state]


def claims_table(root: Path, pair: str, goal: float = 2.0) -> str:
    """The claims table (markdown) over root/<table>/<pair> for the tables that were run."""
    folders = {t: root / t / pair for t in TABLES if (root / t / pair).is_dir()}
    if not folders:
        raise SvbenchError(f"no paper-table records under {root} for pair {pair} (run experiments/paper_tables.sh)")
    spec = [r for t, f in folders.items() if t != "svip_table2" for r in load_records(f) if r["method"] != "ar"]
    long_form = [r for r in load_records(folders["svip_table2"]) if r["method"] != "ar"] \
        if "svip_table2" in folders else []
    lengths = sorted({r["max_new_tokens"] for r in long_form})
    rows = [claim_row(c, long_form if c.long_form else spec) for c in paper_claims(lengths)]
    if len(lengths) > 1:
        rows.append(growth_row(long_form, lengths))
    if spec:
        rows.append(best_row(spec, goal))
    header = ["claim (b > a)", "source", "papers", "svbench speedup a -> b", "b - a [95% interval]", "τ a -> b",
              "verdict"]
    return markdown(pd.DataFrame(rows, columns=header), CAPTION)
