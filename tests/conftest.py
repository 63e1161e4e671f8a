import copy
import os
from pathlib import Path

import pytest
import torch

from svbench import benchmarks

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
torch.set_num_threads(min(2, os.cpu_count() or 1))


def noisy_copy(model, scale: float, seed: int = 123):
    """A draft that agrees with the target often: the target's weights plus small Gaussian noise."""
    draft = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in draft.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale * p.std())
    return draft


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The data the code reads by default: $SVBENCH_DATA when set, else the copy shipped in svbench/data/."""
    path = benchmarks.data_dir()
    if not (path / "spec_bench" / "question.jsonl").is_file():
        pytest.fail(f"benchmark data not found under {path}; unset SVBENCH_DATA to use svbench/data/")
    return path
