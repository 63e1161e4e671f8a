"""Markdown and LaTeX renderings of the analysis DataFrames (numbers to 3 decimals, '-' for none; a column X
with an interval column X_ci beside it is shown as 'X [lo, hi]')."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from svbench.results import with_interval

LABELS = ("method", "policy", "pair", "benchmark", "T", "length", "seed", "config", "series", "same", "a", "b",
          "speedup_verdict", "tau_verdict")


def cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def intervals(frame: pd.DataFrame) -> pd.DataFrame:
    """Join each column X that has an X_ci column into one 'X [lo, hi]' text column."""
    out = frame.copy()
    for column in [c for c in frame.columns if f"{c}_ci" in frame.columns]:
        out[column] = [with_interval(v, ci) for v, ci in zip(out[column], out.pop(f"{column}_ci"))]
    return out


def formatted(frame: pd.DataFrame) -> pd.DataFrame:
    """Every cell as text (intervals joined); label columns as they are."""
    return intervals(frame).astype(object).map(cell)


def plus_minus(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """Join `column` and `column_std` into one 'mean ± std' text column."""
    out = frame.copy()
    std = out.pop(f"{column}_std")
    out[column] = [cell(m) if s is None or s != s else f"{cell(m)} ± {cell(s)}" for m, s in zip(out[column], std)]
    return out


def markdown(frame: pd.DataFrame, caption: str) -> str:
    text = formatted(frame)
    lines = ["| " + " | ".join(str(c) for c in text.columns) + " |",
             "|" + "|".join("---" if c in LABELS else "---:" for c in text.columns) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in text.itertuples(index=False)]
    return "\n".join(lines) + f"\n\n{caption}\n"


TEX_SPECIALS = {"\\": r"\textbackslash{}", "_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#", "$": r"\$",
                "{": r"\{", "}": r"\}", "<": r"$<$", ">": r"$>$", "|": r"$|$", "±": r"$\pm$"}


def tex_escape(text: str) -> str:
    return "".join(TEX_SPECIALS.get(ch, ch) for ch in text)


def latex(frame: pd.DataFrame, caption: str, label: str) -> str:
    text = formatted(frame)
    align = "".join("l" if c in LABELS else "r" for c in text.columns)
    return text.to_latex(index=False, escape=True, column_format=align, caption=tex_escape(caption),
                         label=f"tab:{label}")


def write_table(frame: pd.DataFrame, out: Path, stem: str, caption: str, tex: bool = True) -> list[Path]:
    """stem.md (and stem.tex) in out; returns the paths written."""
    md = out / f"{stem}.md"
    md.write_text(markdown(frame, caption), encoding="utf-8")
    if not tex:
        return [md]
    tx = out / f"{stem}.tex"
    tx.write_text(latex(frame, caption, stem), encoding="utf-8")
    return [md, tx]
