"""logger=wandb: one W&B run per svbench run (per multirun job), offline by default.

Logs the resolved config, a per-question-turn wandb.Table, the summary (overall metrics in run.summary,
per category as a table) and the analysis figures of this run. Offline runs land in
<run dir>/wandb/offline-run-*; upload later with `wandb sync <run dir>/wandb/offline-run-*`.
Multirun jobs of one sweep share a W&B group (the sweep directory's name).
"""
from __future__ import annotations

import os
from pathlib import Path

from svbench.errors import SvbenchError

TABLE_COLUMNS = ("question_id", "category", "turn", "run", "new_tokens", "wall_time", "ar_wall_time", "speedup",
                 "tau", "mean_draft_len", "lossless")


def sweep_group() -> str | None:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hydra_cfg = HydraConfig.get()
        return Path(hydra_cfg.sweep.dir).name if hydra_cfg.mode == RunMode.MULTIRUN else None
    except Exception:  # not under Hydra (tests, scripts)
        return None


def row(record: dict) -> list:
    accepted = record["rounds"]["accepted"]
    drafted = record["rounds"]["drafted"]
    tau = sum(a + 1 for a in accepted) / len(accepted) if accepted else None
    values = {**record, "tau": tau, "mean_draft_len": sum(drafted) / len(drafted) if drafted else None}
    return [values.get(c) for c in TABLE_COLUMNS]


def log_run(c: dict, out_dir: Path, result: dict, records: list[dict]) -> None:
    try:
        import wandb
    except ImportError:
        raise SvbenchError("logger=wandb needs the wandb package (pip install wandb)") from None
    settings = c.get("wandb") or {}
    os.environ.setdefault("WANDB_MODE", settings.get("mode", "offline"))
    os.environ.setdefault("WANDB_SILENT", "true")
    name = f"{result['method']}-{result['policy']}-{result['pair']}-{result['benchmark']}"
    run = wandb.init(project=settings.get("project", "svbench"), entity=settings.get("entity"), name=name,
                     group=settings.get("group") or sweep_group(), config=c, dir=str(out_dir),
                     job_type=result["method"], reinit="finish_previous")
    try:
        run.log({"questions": wandb.Table(columns=list(TABLE_COLUMNS), data=[row(r) for r in records])})
        categories = sorted(k for k in result["summary"] if k != "overall")
        metrics = ["speedup", "tau", "acceptance_rate", "mean_draft_len", "tokens_per_s", "n"]
        run.log({"summary_by_category": wandb.Table(
            columns=["category", *metrics], data=[[k, *(result["summary"][k].get(m) for m in metrics)]
                                                 for k in categories + ["overall"]])})
        run.summary.update({k: v for k, v in result["summary"]["overall"].items() if v is not None})
        if result["method"] != "ar":
            from svbench.analysis.report import analyze

            figures = [p for p in analyze([out_dir], out_dir / "analysis") if p.suffix == ".png"]
            run.log({p.stem: wandb.Image(str(p)) for p in figures})
    finally:
        run.finish()
