"""A Hydra callback: a `hydra.launcher.<key>` that hydra-submitit-launcher does not know (e.g. a typo added
with `+hydra.launcher.partiton=gpu`) ends as one 'svbench: error' line before any job is launched;
otherwise submitit raises a traceback at launch time."""
from __future__ import annotations

import dataclasses

from hydra.experimental.callback import Callback

from svbench.errors import SvbenchError, report_user_errors


def check_launcher_keys(launcher) -> None:
    """Raise SvbenchError for launcher keys outside the submitit plugin's schema (other launchers: no check)."""
    try:
        from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf, SlurmQueueConf
    except ImportError:
        return
    target = str(launcher.get("_target_", ""))
    schema = {"SlurmLauncher": SlurmQueueConf, "LocalLauncher": LocalQueueConf}.get(target.rsplit(".", 1)[-1])
    if schema is None:
        return
    known = {f.name for f in dataclasses.fields(schema)}
    unknown = sorted(set(launcher) - known)
    if unknown:
        raise SvbenchError(f"hydra.launcher.{unknown[0]} is not a setting of {target.rsplit('.', 1)[-1]}; "
                           f"known: {', '.join(sorted(known - {'_target_'}))}")


class LauncherKeys(Callback):
    def on_multirun_start(self, config, **kwargs) -> None:
        report_user_errors(check_launcher_keys, config.hydra.launcher)
