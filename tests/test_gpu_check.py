"""experiments/gpu_check.sh runs here as it would on a GPU machine, on the CPU with the tiny model size."""
import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_runs_on_cpu(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PART", "DTYPES", "WHEELS")}  # the whole check
    # both parts; the tests part on two quick tests, not the decoding files `make test` already runs on the CPU
    env.update(DEVICE="cpu", SIZE="tiny", OUT=str(tmp_path), PY=str(Path(os.sys.executable)),
               TESTS="tests/test_lossless.py::test_single_token_prompt tests/test_sampling.py::"
                     "test_reduced_vocabulary_sampling_is_exact")
    result = subprocess.run(["bash", "experiments/gpu_check.sh"], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    tests_log = (tmp_path / "tests_cpu.log").read_text()
    assert tests_log.splitlines()[-1].startswith("2 passed"), tests_log[-2000:]  # both selected tests ran and passed
    rows = json.loads((tmp_path / "gpu_check_cpu.json").read_text())["rows"]
    assert {(r["method"], r["policy"]) for r in rows} >= {("vanilla_sd", "svip"), ("eagle2", "fixed"), ("eagle3", "svip"),
                                                         ("pld", "fixed")}
    assert {r["dtype"] for r in rows} == {"float16", "bfloat16"}
    for r in rows:
        assert r["exact"] + r["tie"] + r["mismatch"] == 3 and r["mismatch"] == 0, r
        assert r["target_ms"] > 0 and r["syncs_per_round"] > 0
        assert len(r["ar_ms_per_token"]) == len(r["sd_ms_per_token"]) == 3 and r["tokens_per_round"] >= 1, r
        assert len(r["instrumented_ms_per_token"]) == 3 and r["ms_per_token"] > 0, r
    assert "| float16 | vanilla_sd | fixed |" in (tmp_path / "gpu_check_cpu.md").read_text()


def test_gpu_check_refuses_an_unknown_part_with_one_line(tmp_path):
    env = {**os.environ, "PART": "both", "OUT": str(tmp_path), "WHEELS": str(tmp_path / "none")}
    result = subprocess.run(["bash", "experiments/gpu_check.sh"], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and result.stderr == "PART 'both': all, tests or check\n"
    assert not list(tmp_path.iterdir())  # refused before installing or writing anything
