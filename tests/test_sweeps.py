"""Sweeps that survive: submitit multirun end to end, SIGKILL mid-run then resume (nothing lost or
duplicated, same result as an uninterrupted run), determinism of ids and acceptance statistics."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import pinned

REPO = Path(__file__).resolve().parents[1]
DETERMINISTIC = ("n", "tau", "acceptance_rate", "mean_draft_len", "lossless")  # summary fields not made of timings
KEY = ("method", "policy", "pair", "benchmark", "question_id", "turn", "seed", "run", "config_hash")


def command(*overrides, multirun=False):
    return [sys.executable, "-m", "svbench", *(["--multirun"] if multirun else []), "pair=tiny", "progress=false",
            *pinned(*overrides), *overrides]


def records(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "records.jsonl").read_text().splitlines()]


def by_key(recs):
    return {tuple(r[k] for k in KEY): r for r in recs}


def deterministic_summary(run_dir):
    overall = json.loads((Path(run_dir) / "summary.json").read_text())["summary"]["overall"]
    return {k: overall[k] for k in DETERMINISTIC}


@pytest.mark.slow
def test_submitit_local_multirun_and_resume(tmp_path):
    sweep = tmp_path / "sweep"
    cmd = command("hydra/launcher=local", "policy=fixed,svip", "benchmark.limit=1", "max_new_tokens=8",
                  f"hydra.sweep.dir={sweep}", multirun=True)
    first = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    runs = sorted(sweep.glob("*/records.jsonl"))
    assert [p.parent.name.split("policy=")[1] for p in runs] == ["fixed", "svip"]
    before = [p.read_text() for p in runs]
    assert all(len(b.splitlines()) == 14 for b in before)  # 7 question-turns x (AR + method)
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert [p.read_text() for p in runs] == before  # the re-submitted sweep found everything done



@pytest.mark.parametrize("launcher, partition", [("slurm", None), ("slurm", "gpu"), ("submitit_slurm", "gpu")])
def test_slurm_launcher_config_is_accepted_by_submitit(tmp_path, monkeypatch, launcher, partition):
    """No cluster here: compose the launcher config and hand its knobs to submitit's SLURM executor the way
    hydra-submitit-launcher does (executor init + update_parameters), which rejects unknown sbatch keys.
    The executor only looks for an `srun` on PATH; a dummy one stands in."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 1\n")
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    import submitit
    from hydra import compose, initialize_config_dir
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from omegaconf import OmegaConf

    overrides = [f"hydra/launcher={launcher}", f"hydra.sweep.dir={tmp_path}"]
    overrides += [] if partition is None else [f"hydra.launcher.partition={partition}"]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    assert params.pop("_target_").endswith("SlurmLauncher")
    assert params["partition"] == partition
    if launcher == "slurm":  # svbench's knobs on top of the plugin's defaults
        assert (params["gpus_per_node"], params["array_parallelism"], params["max_num_timeout"]) == (1, 16, 3)
    executor = submitit.AutoExecutor(folder=str(tmp_path / ".submitit"), cluster="slurm",
                                     slurm_max_num_timeout=params.pop("max_num_timeout"))
    params.pop("submitit_folder")
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    with pytest.raises(Exception):  # the check above can fail: a key sbatch does not know is refused
        executor.update_parameters(slurm_gpus_per_nod=1)


@pytest.mark.slow
def test_unknown_launcher_key_is_one_clear_error_before_launching(tmp_path):
    cmd = command("hydra/launcher=slurm", "+hydra.launcher.partiton=gpu", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                  multirun=True)
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]  # one line
    assert "svbench: error: hydra.launcher.partiton is not a setting of SlurmLauncher" in result.stderr
    assert not (tmp_path / "sweep").exists()  # nothing launched

@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("whole")
    result = subprocess.run(command("policy=svip", "max_new_tokens=48", f"hydra.run.dir={run_dir}"), cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return run_dir


@pytest.mark.slow
def test_sigkill_then_resume_loses_and_duplicates_nothing(uninterrupted, tmp_path):
    run_dir = tmp_path / "killed"
    cmd = command("policy=svip", "max_new_tokens=48", f"hydra.run.dir={run_dir}")
    job = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    path, deadline = run_dir / "records.jsonl", time.time() + 300
    while time.time() < deadline and (not path.is_file() or len(path.read_bytes().splitlines()) < 5):
        time.sleep(0.05)
    os.killpg(job.pid, signal.SIGKILL)  # a pre-empted job: no cleanup, possibly mid-write
    job.wait()
    written = path.read_bytes()
    assert 5 <= len(written.splitlines()) < 14, "the job must die mid-run for this test to mean anything"
    with open(path, "ab") as fh:  # and make the last line torn, as a kill inside write() leaves it
        fh.write(b'{"method": "vanilla_sd", "policy": "sv')
    resumed = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "torn" in resumed.stderr
    recs, whole = records(run_dir), records(uninterrupted)
    assert len(recs) == len(whole) == 14 and len(by_key(recs)) == 14  # 0 lost, 0 duplicated
    assert by_key(recs).keys() == by_key(whole).keys()
    assert {k: r["ids"] for k, r in by_key(recs).items()} == {k: r["ids"] for k, r in by_key(whole).items()}
    assert deterministic_summary(run_dir) == deterministic_summary(uninterrupted)


@pytest.mark.slow
def test_same_seed_same_ids_and_acceptance(uninterrupted, tmp_path):
    again = tmp_path / "again"
    result = subprocess.run(command("policy=svip", "max_new_tokens=48", f"hydra.run.dir={again}"), cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    first, second = by_key(records(uninterrupted)), by_key(records(again))
    for key, record in first.items():
        assert second[key]["ids"] == record["ids"]
        assert second[key]["rounds"]["drafted"] == record["rounds"]["drafted"]
        assert second[key]["rounds"]["accepted"] == record["rounds"]["accepted"]
    assert deterministic_summary(again) == deterministic_summary(uninterrupted)


@pytest.mark.slow
def test_sampling_is_reproducible_per_seed_and_differs_across_seeds(tmp_path):
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        result = subprocess.run(command("temperature=1.0", "benchmark.limit=1", "max_new_tokens=16", f"seed={seed}",
                                        f"hydra.run.dir={tmp_path / name}"), cwd=REPO, capture_output=True,
                                text=True, timeout=600)
        assert result.returncode == 0, result.stderr
        runs[name] = [r["ids"] for r in records(tmp_path / name)]
    assert runs["a"] == runs["b"] and runs["a"] != runs["c"]


@pytest.mark.slow
def test_paper_tables_time_one_shared_ar_baseline_and_resume(tmp_path):
    """experiments/paper_tables.sh: AR is timed once per table setting (Spec-Bench per table; every Table 2 length) and
    no table job times its own; every SD record found its AR baseline; a re-run adds no record."""
    env = {**os.environ, "PY": sys.executable, "PAIR": "tiny", "LIMIT": "1", "TOKENS": "8", "LONG_LIMIT": "1",
           "LENGTHS": "8,16", "EXP": str(tmp_path / "exp"), "ANALYSIS": str(tmp_path / "analysis"),
           "EXTRA": "threads=1"}
    script = ["bash", "experiments/paper_tables.sh", "svip_table1", "svip_table2"]
    result = subprocess.run(script, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    files = sorted((tmp_path / "exp").glob("**/records.jsonl"))
    ar_files = [f for f in files if "paper_ar" in f.parts]
    assert len(ar_files) == 3  # Table 1's Spec-Bench AR + 2 lengths
    assert (tmp_path / "exp" / "paper_ar" / "tiny" / "svip_table1" / "records.jsonl").is_file()  # one AR per table
    assert all(r["method"] == "ar" for f in ar_files for r in records(f.parent))
    table_files = [f for f in files if "paper_ar" not in f.parts]
    assert len(table_files) == 3 + 3 * 2  # Table 1: 3 policies; Table 2: 3 policies x 2 lengths
    sd = [r for f in table_files for r in records(f.parent)]
    assert sd and all(r["method"] != "ar" and r.get("ar_wall_time") for r in sd)
    before = {f: f.read_text() for f in files}
    result = subprocess.run(script, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert {f: f.read_text() for f in files} == before
    assert (tmp_path / "analysis" / "svip_table2" / "tiny" / "speedup_by_length.md").is_file()
    claims = (tmp_path / "analysis" / "claims" / "tiny.md").read_text()
    assert "| SVIP > fixed length, vanilla SD |" in claims and "not run: glide + fixed" in claims
    assert "| SVIP's gain over fixed grows with length (8 -> 16 tokens) |" in claims


@pytest.mark.slow
def test_goal_check_times_an_ar_beside_every_configuration_and_repeats(tmp_path):
    """experiments/goal_check.sh: each configuration's folder holds its own AR record for every question-turn and
    run, each SD record's speedup is against the AR of its own folder and run; a re-run adds nothing; a bad
    CONFIGS entry or RUNS stops before any model loads with one line and exit status 2."""
    env = {**os.environ, "PY": sys.executable, "PAIR": "tiny", "LIMIT": "1", "TOKENS": "8", "RUNS": "2",
           "CONFIGS": "vanilla_sd svip,eagle2 fixed", "OUT": str(tmp_path / "exp"),
           "ANALYSIS": str(tmp_path / "analysis"), "EXTRA": "threads=1"}
    script = ["bash", "experiments/goal_check.sh"]
    result = subprocess.run(script, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    files = sorted((tmp_path / "exp").glob("*/records.jsonl"))
    assert [f.parent.name for f in files] == ["eagle2-fixed", "vanilla_sd-svip"]
    for f in files:
        rows = records(f.parent)
        ar = {(r["question_id"], r["turn"], r["run"]): r for r in rows if r["method"] == "ar"}
        sd = [r for r in rows if r["method"] != "ar"]
        assert len(ar) == len(sd) > 0 and {r["run"] for r in sd} == {0, 1}
        for r in sd:
            own = ar[(r["question_id"], r["turn"], r["run"])]
            assert r["ar_wall_time"] == own["wall_time"] and r["ar_new_tokens"] == own["new_tokens"]
    assert (tmp_path / "analysis" / "summary.md").is_file()
    before = {f: f.read_text() for f in files}
    result = subprocess.run(script, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0 and {f: f.read_text() for f in files} == before
    for bad, message in (({"CONFIGS": "eagle2_cpu"}, "CONFIGS entry 'eagle2_cpu'"), ({"RUNS": "0"}, "RUNS '0'")):
        result = subprocess.run(script, cwd=REPO, env={**env, **bad}, capture_output=True, text=True, timeout=60)
        assert result.returncode == 2 and result.stderr.strip().splitlines() == [result.stderr.strip()]
        assert message in result.stderr and not (tmp_path / "exp" / "eagle2_cpu-svip").exists()


@pytest.mark.parametrize("script, args", [("goal_check.sh", []), ("tree_shape_sweep.sh", ["t"]),
                                          ("draft_candidate.sh", ["eagle", "drafts/smollm2-135m-eagle", "t"])])
def test_experiment_scripts_refuse_a_bad_limit_with_the_shared_check(script, args, tmp_path):
    """experiments/checks.sh's positive_int: LIMIT=0 stops each script with the same one line, exit status 2."""
    env = {**os.environ, "LIMIT": "0", "OUT": str(tmp_path / "out")}
    result = subprocess.run(["bash", f"experiments/{script}", *args], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == "LIMIT '0': a positive integer (questions per Spec-Bench category)"
