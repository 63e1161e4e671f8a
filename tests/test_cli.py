"""`python -m svbench` end to end on pair=tiny: records, summary, resume, torn records, bad input."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import pinned

REPO = Path(__file__).resolve().parents[1]


def svbench(run_dir, *overrides, env=None):
    cmd = [sys.executable, "-m", "svbench", "pair=tiny", "progress=false", f"hydra.run.dir={run_dir}",
           *pinned(*overrides), *overrides]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def records(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "records.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def svip_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("svip")
    result = svbench(run_dir, "policy=svip")
    assert result.returncode == 0, result.stderr
    return run_dir, result


@pytest.mark.slow
def test_end_to_end_records_and_summary(svip_run):
    run_dir, result = svip_run
    recs = records(run_dir)
    ar = [r for r in recs if r["method"] == "ar"]
    sd = [r for r in recs if r["method"] == "vanilla_sd"]
    assert len(ar) == len(sd) == 7  # 6 smoke questions, one with two turns
    for r in sd:
        assert r["policy"] == "svip" and r["lossless"] is True and r["new_tokens"] == len(r["ids"])
        assert r["speedup"] > 0 and len(r["rounds"]["drafted"]) == len(r["draft_entropy"])
        assert {"cpu", "torch", "transformers", "git_sha"} <= set(r["env"])
    summary = json.loads((run_dir / "summary.json").read_text())["summary"]
    assert summary["overall"]["n"] == 7 and summary["overall"]["lossless"] == 7
    assert {"speedup", "tau", "acceptance_rate", "mean_draft_len", "tokens_per_s"} <= set(summary["overall"])
    assert "overall" in result.stdout and "speedup" in result.stdout


@pytest.mark.slow
def test_rerun_resumes_without_duplicates(svip_run):
    run_dir, _ = svip_run
    before = (run_dir / "records.jsonl").read_text()
    summary_before = json.loads((run_dir / "summary.json").read_text())["summary"]
    result = svbench(run_dir, "policy=svip")
    assert result.returncode == 0, result.stderr
    assert (run_dir / "records.jsonl").read_text() == before
    assert json.loads((run_dir / "summary.json").read_text())["summary"] == summary_before


@pytest.mark.slow
def test_torn_last_record_is_dropped_and_rerun(tmp_path):
    assert svbench(tmp_path, "method=ar").returncode == 0
    path = tmp_path / "records.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])  # killed mid-write
    result = svbench(tmp_path, "method=ar")
    assert result.returncode == 0, result.stderr
    assert "torn last record" in result.stderr
    assert [r["question_id"] for r in records(tmp_path)] == [json.loads(x)["question_id"] for x in lines]


@pytest.mark.slow
def test_ar_baseline_is_reused_from_another_run(svip_run, tmp_path):
    run_dir, _ = svip_run
    result = svbench(tmp_path, "policy=fixed", f"baseline_records=[{run_dir}/records.jsonl]")
    assert result.returncode == 0, result.stderr
    assert {r["method"] for r in records(tmp_path)} == {"vanilla_sd"}


@pytest.mark.slow
@pytest.mark.parametrize("overrides, message", [
    (["method=nope"], "method/nope"),
    (["policy=nope"], "policy/nope"),
    (["pair=nope"], "pair/nope"),
    (["max_new_tokens=0"], "max_new_tokens=0"),
    (["policy=svip", "policy.h=5"], "policy.h=5"),
    (["benchmark.path=/nonexistent.jsonl"], "does not exist"),
    (["baseline_records=5"], "must be a list of records.jsonl"),
    # another configuration into this folder: resume would mix its records with the svip run's
    (["policy=fixed"], "holds records of another configuration"),
    (["policy=fixed"], "differs in: method.policy._target_"),  # the refusal names what differs
    (["policy=svip", "max_new_tokens=9"], "holds records of another configuration"),
])
def test_bad_input_is_one_clear_error_and_keeps_records(svip_run, overrides, message):
    run_dir, _ = svip_run
    before = (run_dir / "records.jsonl").read_text()
    result = svbench(run_dir, *overrides)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and message in result.stderr
    assert (run_dir / "records.jsonl").read_text() == before


@pytest.mark.slow
def test_a_locked_folder_and_a_changed_question_file_stop_with_one_line(tmp_path):
    """A second run into a folder that a run is writing would duplicate every record: it is refused. An AR
    record reused for a prompt that changed under the same file path would compare different prompts."""
    import fcntl

    with open(tmp_path / ".svbench.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        busy = svbench(tmp_path, "method=ar")
    assert busy.returncode != 0 and "another svbench run is writing" in busy.stderr and "Traceback" not in busy.stderr
    assert not (tmp_path / "records.jsonl").exists()
    questions = tmp_path / "q.jsonl"
    rows = [json.loads(line) for line in (REPO / "svbench/data/smoke.jsonl").read_text().splitlines()]
    questions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run_dir = tmp_path / "run"
    assert svbench(run_dir, "method=ar", f"benchmark.path={questions}").returncode == 0
    rows[0]["turns"][0] += " Please answer in one long sentence with many words."
    questions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    changed = svbench(run_dir, "method=ar", f"benchmark.path={questions}")
    assert changed.returncode != 0 and "-token prompt, this one has" in changed.stderr, changed.stderr


@pytest.mark.slow
def test_malformed_question_file_reports_the_line(tmp_path):
    bad = tmp_path / "q.jsonl"
    bad.write_text('{"question_id": 1, "category": "qa", "turns": ["hi"]}\n{"question_id": 2,\n')
    result = svbench(tmp_path / "run", f"benchmark.path={bad}")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("svbench: error:")
    assert "line 2: not valid JSON" in result.stderr


def test_complete_but_invalid_last_record_is_an_error_not_dropped(tmp_path):
    from svbench.errors import SvbenchError
    from svbench.results import read_records

    path = tmp_path / "records.jsonl"
    path.write_text('{"method": "ar"}\n')  # newline-terminated, so not a torn write
    with pytest.raises(SvbenchError, match="line 1: corrupt record"):
        read_records(path, repair=True)
    assert path.read_text() == '{"method": "ar"}\n'


@pytest.mark.slow
@pytest.mark.parametrize("method", ["glide", "glide_cape", "eagle2"])
def test_tree_methods_end_to_end(tmp_path, method):
    result = svbench(tmp_path, f"method={method}", "policy=svip", "benchmark.limit=2", "max_new_tokens=24")
    assert result.returncode == 0, result.stderr
    sd = [r for r in records(tmp_path) if r["method"] == method]
    assert sd and all(r["lossless"] for r in sd)


@pytest.mark.slow
def test_wandb_logging_offline_writes_a_run(tmp_path):
    result = svbench(tmp_path, "logger=wandb", "benchmark.limit=1", "max_new_tokens=8", env={"WANDB_MODE": "offline"})
    assert result.returncode == 0, result.stderr
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))  # the run's data file, ready for `wandb sync`
    assert (tmp_path / "analysis" / "draft_length_hist.png").is_file()
    assert svbench(tmp_path / "bad", "logger=tensorboard").returncode == 2


@pytest.mark.slow
def test_default_run_folder_is_named_by_the_method_config(tmp_path):
    """eagle2_cpu records say method eagle2; its default folder is eagle2_cpu-<policy>, so method=eagle2 (another
    tree, another config hash) does not land in the same folder."""
    result = subprocess.run([sys.executable, "-m", "svbench", "pair=tiny", "method=eagle2_cpu", "progress=false",
                             "max_new_tokens=4", "benchmark.limit=1"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "results/runs/tiny/smoke/eagle2_cpu-svip/records.jsonl").is_file()
    assert {r["method"] for r in records(tmp_path / "results/runs/tiny/smoke/eagle2_cpu-svip")} == {"ar", "eagle2"}
