"""analyze(): every table and figure of a set of runs, written into one folder."""
from __future__ import annotations

from pathlib import Path

from svbench.analysis import metrics, plots
from svbench.analysis.inputs import load_records, sd_records
from svbench.analysis.tables import plus_minus, write_table
from svbench.analysis.metrics import MIN_VERDICT_N
from svbench.results import LEVEL, RESAMPLES, SEED

INTERVALS = (f"[lo, hi]: {LEVEL:.0%} BCa bootstrap interval over question-turns ({RESAMPLES} resamples, seed "
             f"{SEED}; a record's speed and its AR speed resampled together; repeated runs of a question-turn "
             "resampled within it as one cluster); none for fewer than 2 question-turns.")

PAIRED = (f"Over the question-turns and runs both have (n, paired on question_id, turn, run): speedup_a / "
          f"speedup_b (and tau_a / tau_b where shown) over those; diff = b - a with its {LEVEL:.0%} paired BCa "
          f"bootstrap interval (a question-turn's numbers for a and b resampled together; runs within a "
          f"question-turn as one cluster; {RESAMPLES} resamples, seed {SEED}). resolved: the interval excludes 0; "
          f"within noise: it does not; too few: under {MIN_VERDICT_N} question-turns, no verdict.")

CAPTIONS = {
    "speedup_by_category": "Speedup over AR (mean tokens/s of the method / mean tokens/s of AR, over question-turns) "
                           "per category and overall; tau = mean accepted draft tokens + 1 per round, overall. "
                           + INTERVALS,
    "tau_by_category": "tau (mean accepted draft tokens + 1 per round, over the rounds of a category's "
                       "question-turns) per category and overall: where a draft's acceptance differs by kind of "
                       "prompt. " + INTERVALS,
    "per_position_acceptance": "P(draft position i accepted | positions < i accepted), over rounds that drafted at "
                               "least i deep (tree methods: depth = drafted steps, accepted = path length). "
                               "'-': no round reached that position.",
    "efficiency": "ideal = tau / (1 + c * mean_draft_len), c = t_draft / t_verify (draft time per drafted token / "
                  "verify time per round, rounds after the prefill); efficiency = achieved / ideal. "
                  "Times in ms. " + INTERVALS,
    "oracle": "Oracle length policy from greedy chain traces: each round drafts exactly its accepted tokens. "
              "Oracle time = verify time + accepted x draft time per drafted token + time outside draft/verify. "
              "Censored: rounds with accepted == drafted, where the draft might have agreed further, so the "
              "oracle length is a lower bound there and the oracle speedup an estimate from below. "
              "draft_len / oracle_len: mean drafted / accepted tokens over drafting rounds; "
              "wasted = drafted tokens not accepted / drafted. " + INTERVALS,
    "speedup_by_length": "Overall speedup over AR per generation length (max_new_tokens; SVIP Table 2 layout). "
                         + INTERVALS,
    "summary": "Mean ± sample std (ddof=1) over repeated runs (`run` index) of overall speedup and tau; "
               "speedup_all / tau_all: over the records of every run together. " + INTERVALS,
    "comparisons": "Configurations of one setting (pair, benchmark, T, length) that share a method (policy vs "
                   "policy) or a policy (method vs method), b against a. " + PAIRED + " Each interval holds for "
                   "one comparison on its own (no correction for making many).",
    "compare": "b against a. " + PAIRED + " speedup '-': a or b has records without an AR baseline. "
               "t_draft_ms: draft time per drafted token, t_verify_ms: verify time per round (as in efficiency), "
               "over the same question-turns: where a and b do the same work per round (the same draft "
               "architecture and draft length, or the same tree), a gap between them is the machine's state "
               "during the runs, not the draft, and a speedup difference of that size is not the draft's.",
}


def skipped_note(frame, sd, what: str) -> str:
    left_out = len(metrics.group(sd)) - len(frame)
    return f" {left_out} configuration(s) left out ({what})." if left_out else ""


def analyze(paths, out) -> list[Path]:
    """Read the records under paths (run dirs, sweep dirs, records files, Spec-Bench answer files) and write
    the tables (.md, .tex) and figures (.png) into out; returns the files written."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    sd = sd_records(load_records(paths), paths)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = write_table(metrics.speedup_by_category(sd), out, "speedup_by_category", CAPTIONS["speedup_by_category"])
    written += write_table(metrics.by_category(sd, "tau"), out, "tau_by_category", CAPTIONS["tau_by_category"],
                           tex=False)
    frame = metrics.per_position_acceptance(sd)
    written += write_table(frame, out, "per_position_acceptance",
                           CAPTIONS["per_position_acceptance"] + skipped_note(frame, sd, "no drafted counts recorded"))
    frame = metrics.efficiency(sd)
    written += write_table(frame, out, "efficiency",
                           CAPTIONS["efficiency"] + skipped_note(frame, sd, "no drafted counts recorded"), tex=False)
    frame = metrics.oracle(sd)
    written += write_table(frame, out, "oracle",
                           CAPTIONS["oracle"] + skipped_note(frame, sd, "not greedy, tree-shaped or no drafts"),
                           tex=False)
    repeats = metrics.repeats(sd)
    frame = plus_minus(plus_minus(repeats, "speedup"), "tau")
    written += write_table(frame, out, "summary", CAPTIONS["summary"], tex=False)
    frame = metrics.comparisons(sd)
    if len(frame):
        written += write_table(frame, out, "comparisons", CAPTIONS["comparisons"], tex=False)
    else:  # an earlier analysis's table into this --out would otherwise be read as this one's
        (out / "comparisons.md").unlink(missing_ok=True)
    written.append(plots.speedup_overview(metrics.row_labels(metrics.group(sd)), repeats["speedup_all"],
                                          repeats["speedup_all_ci"], out / "speedup.png"))
    written.append(plots.draft_length_hist(sd, out / "draft_length_hist.png"))
    written.append(plots.entropy_vs_acceptance(sd, out / "entropy_vs_acceptance.png"))
    by_length = metrics.speedup_by_length(sd)
    table = metrics.speedup_length_table(by_length)
    if table is not None:
        written += write_table(table, out, "speedup_by_length", CAPTIONS["speedup_by_length"])
        written.append(plots.speedup_vs_length(by_length, out / "speedup_vs_length.png"))
    else:
        for stale in ("speedup_by_length.md", "speedup_by_length.tex", "speedup_vs_length.png"):
            (out / stale).unlink(missing_ok=True)
    return written
