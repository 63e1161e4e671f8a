"""The environment record and the one-line warning for bf16 on a CPU without native bf16 matmuls."""
import pytest

from svbench.config import group_config
from svbench.models import load_pair


@pytest.mark.parametrize("native", [False, True])
def test_bf16_on_a_cpu_without_native_matmuls_warns_once_per_setting(native, monkeypatch, capsys):
    """dtype=bfloat16 on a CPU without oneDNN's bf16 (AVX2 only: a slow fallback whose cost grows per row) gets
    one stderr line, once; float32, or a CPU with native bf16, gets none; the environment record says which."""
    import svbench.environment as environment

    monkeypatch.setattr(environment, "cpu_bf16_native", lambda: native)
    environment.warn_if_bf16_is_slow.cache_clear()
    pair_cfg = group_config("pair", "tiny")
    load_pair(pair_cfg, "float32", "cpu")
    assert capsys.readouterr().err == ""
    for _ in range(2):
        load_pair(pair_cfg, "bfloat16", "cpu")
    lines = capsys.readouterr().err.strip().splitlines()
    expected = [] if native else [line for line in lines if line.startswith("dtype=bfloat16 on a CPU without")]
    assert lines == expected and len(expected) == (0 if native else 1)
    assert environment._environment.__wrapped__("cpu")["cpu_bf16_native"] is native
    environment.warn_if_bf16_is_slow.cache_clear()
