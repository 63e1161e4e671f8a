"""What a result was measured on: hardware, library versions, code version."""
from __future__ import annotations

import functools
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_bf16_native() -> bool:
    """Whether this CPU multiplies bf16 matrices through oneDNN (AVX512, AVX512-BF16 or AMX: the check
    torch.compile makes). Without it (AVX2 only) F.linear in bf16 took a slow fallback whose cost grows with
    every row on session 28's Zen 3 EPYC: ~14 GFLOP/s at 1, 8 and 512 rows against fp32's 15, 42 and 94
    (576 -> 1,536), so a target forward over 12 tree tokens cost 3.8x a one-token forward in bf16
    (results/bf16_without_native_cpu_s28.md, results/cpu_avx2_s28_smollm2.md)."""
    supported = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(torch.backends.mkldnn.is_available() and supported is not None and supported())


@functools.cache
def warn_if_bf16_is_slow(setting: str) -> None:
    """One stderr line (once per setting) when a bf16 setting runs on a CPU without native bf16 matmuls."""
    if not cpu_bf16_native():
        print(f"{setting} on a CPU without native bf16 matmuls ({torch.backends.cpu.get_cpu_capability()}): bf16 "
              f"linear layers take a slow fallback whose cost grows with every row (a verified tree, a training "
              f"batch), so SD speedups and training times here are not those of a bf16-capable CPU "
              f"(results/cpu_avx2_s28_smollm2.md)", file=sys.stderr)


def _git_sha() -> str | None:
    repo = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (sha + ("-dirty" if dirty else "")) if sha else None


def environment(device: str = "cpu") -> dict:
    """The machine and software record; torch_threads is read now (a job may have set threads=)."""
    return {k: torch.get_num_threads() if k == "torch_threads" else v for k, v in _environment(device).items()}


@functools.cache
def _environment(device: str) -> dict:
    import transformers

    env = {
        "cpu": _cpu_name(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_bf16_native": cpu_bf16_native(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else None,
        "cuda": torch.version.cuda if device.startswith("cuda") else None,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_sha": _git_sha(),
    }
    if device.startswith("cuda"):
        env["note"] = ("GPU kernels are not bitwise deterministic across cards/driver versions; token ids may "
                       "differ from a CPU run through near-ties, acceptance statistics likewise")
    return env


def write_result(out, lines: list[str], command: str, rows: list[dict]) -> None:
    """An experiment's result files: ``out``.md (the table ``lines`` + the environment record, printed too)
    and ``out``.json ({command, rows, environment})."""
    env = environment()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(lines + ["", f"Environment: {json.dumps(env)}"]) + "\n"
    out.with_suffix(".md").write_text(text)
    out.with_suffix(".json").write_text(json.dumps({"command": command, "rows": rows, "environment": env}, indent=2))
    print(text, end="")
