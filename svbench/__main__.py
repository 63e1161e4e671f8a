"""python -m svbench method=... policy=... pair=... benchmark=... [key=value ...]  (Hydra; --multirun sweeps)"""
from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig

from svbench.errors import report_user_errors

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg) -> None:
    from svbench.runner import run

    report_user_errors(run, cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
