"""The analysis figures, drawn on bare matplotlib Figures (Agg canvas; no pyplot state, no GUI)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from svbench.analysis.metrics import (acceptance_by_entropy, chain_token_outcomes, draft_lengths, group, has_drafts,
                                      row_labels)


def save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")  # long tick labels stay inside the image
    return path


def note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)


def draft_length_hist(sd: list[dict], path: Path) -> Path:
    """Histogram of the drafted count per round (rounds after the prefill), one outline per configuration."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    groups = group(sd)
    groups = [(label, rs) for label, rs in zip(row_labels(groups), groups.values()) if has_drafts(rs)]
    top = max((max(draft_lengths(rs), default=0) for _, rs in groups), default=0)
    bins = np.arange(-0.5, top + 1.5)
    for label, rs in groups:
        ax.hist(draft_lengths(rs), bins=bins, histtype="step", density=True, linewidth=1.5, label=label)
    if groups:
        ax.legend(fontsize=7)
    else:
        note(ax, "no drafted rounds recorded")
    ax.set(xlabel="tokens drafted in a round", ylabel="fraction of rounds", title="Draft length per round")
    return save(fig, path)


def entropy_vs_acceptance(sd: list[dict], path: Path, bins: int = 12) -> Path:
    """Acceptance rate of chain-drafted tokens against their draft entropy (nats), binned, per configuration."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    groups = group(sd)
    outcomes = {label: chain_token_outcomes(rs) for label, rs in zip(row_labels(groups), groups.values())}
    outcomes = {k: v for k, v in outcomes.items() if len(v)}
    if outcomes:
        top = max(v["entropy"].max() for v in outcomes.values())
        edges = np.linspace(0.0, max(top, 1e-6), bins + 1)
        for label, frame in outcomes.items():
            table = acceptance_by_entropy(frame, edges)
            ax.plot(table["centre"], table["mean"], marker="o", label=label)
        ax.legend(fontsize=7)
    else:
        note(ax, "no chain rounds with draft entropies")
    ax.set(xlabel="draft entropy of the token (nats)", ylabel="acceptance rate", ylim=(-0.02, 1.02),
           title="Acceptance vs draft entropy (chain rounds, bins of >= 5 tokens)")
    return save(fig, path)


def speedup_vs_length(by_length, path: Path) -> Path | None:
    """Overall speedup against max_new_tokens, one line per configuration, error bars from the 95% intervals
    (speedup_ci); None when only one length."""
    if by_length["length"].nunique() < 2:
        return None
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    keys = ["series", "pair", "benchmark", "T"]
    for key, frame in by_length.dropna(subset=["speedup", "length"]).groupby(keys, sort=False, dropna=False):
        frame = frame.sort_values("length")
        ci = np.array([c if isinstance(c, (list, tuple)) else (np.nan, np.nan) for c in frame["speedup_ci"]])
        yerr = np.abs(ci - frame["speedup"].to_numpy()[:, None]).T  # (2, n): below, above
        ax.errorbar(frame["length"], frame["speedup"], yerr=yerr, marker="o", capsize=3,
                    label=f"{key[0]} [{key[1]}, T={key[3]}]")
    ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
    ax.set_xscale("log", base=2)
    lengths = sorted({int(n) for n in by_length["length"].dropna()})
    ax.set_xticks(lengths, [str(n) for n in lengths])
    ax.minorticks_off()
    ax.set(xlabel="max_new_tokens", ylabel="speedup over AR", title="Speedup vs generation length (95% intervals)")
    ax.legend(fontsize=7)
    return save(fig, path)


def speedup_overview(labels: list[str], speedup, speedup_ci, path: Path) -> Path:
    """Overall speedup over AR per configuration (labels: 'method / policy ...'), best at the top, with its
    95% interval (metrics.repeats' speedup_all / speedup_all_ci); a dashed line at 1 (= AR)."""
    rows = sorted(((label, s, ci) for label, s, ci in zip(labels, speedup, speedup_ci) if s is not None and s == s),
                  key=lambda row: row[1])
    width = 4 + 0.065 * max((len(label) for label, _, _ in rows), default=0)  # room for the labels at fontsize 7
    fig = Figure(figsize=(width, 1.2 + 0.35 * max(len(rows), 1)))
    ax = fig.add_subplot()
    if rows:
        values = np.array([s for _, s, _ in rows])
        ci = np.array([c if isinstance(c, (list, tuple)) else (np.nan, np.nan) for _, _, c in rows])  # (n, 2)
        ax.errorbar(values, np.arange(len(rows)), xerr=np.abs(ci - values[:, None]).T, fmt="o", capsize=3)
        ax.set_yticks(np.arange(len(rows)), [label for label, _, _ in rows], fontsize=7)
        ax.axvline(1.0, color="grey", linewidth=0.8, linestyle="--")
    else:
        note(ax, "no speedups recorded")
    ax.set(xlabel="speedup over AR (95% interval)", title="Speedup per method and policy")
    return save(fig, path)
