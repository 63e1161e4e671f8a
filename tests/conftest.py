import copy
import os
from pathlib import Path

import pytest
import torch

from svbench import benchmarks

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
# One thread, here and (OMP_NUM_THREADS) in the CLI subprocesses: the tiny test models gain nothing from more,
# and on a busy 2-core machine two OpenMP threads per process contend, making forwards 10-100x slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# the device the decoding tests run their models on (experiments/gpu_check.sh: SVBENCH_TEST_DEVICE=cuda)
DEVICE = torch.device(os.environ.get("SVBENCH_TEST_DEVICE", "cpu"))
torch.set_num_threads(1)


def noisy_copy(model, scale: float, seed: int = 123):
    """A draft that agrees with the target often: the target's weights plus small Gaussian noise."""
    draft = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in draft.parameters():
            p.add_((torch.randn(p.shape, generator=gen) * scale).to(p.device) * p.std())
    return draft


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The data the code reads by default: $SVBENCH_DATA when set, else the copy shipped in svbench/data/."""
    path = benchmarks.data_dir()
    if not (path / "spec_bench" / "question.jsonl").is_file():
        pytest.fail(f"benchmark data not found under {path}; unset SVBENCH_DATA to use svbench/data/")
    return path


# The CLI's default is the CPU's best configuration (EAGLE-2 + svip, bfloat16); tests pin what they do not
# override: vanilla SD, fixed, float32.
PINNED = {"method": "vanilla_sd", "policy": "fixed", "dtype": "float32"}


def pinned(*overrides: str) -> list[str]:
    """PINNED as Hydra overrides, less the keys the caller overrides itself (Hydra refuses a key twice)."""
    return [f"{k}={v}" for k, v in PINNED.items() if not any(o.startswith(f"{k}=") for o in overrides)]
