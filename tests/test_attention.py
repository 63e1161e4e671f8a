"""svbench_cpu attention: the one-query low-precision path equals transformers' sdpa (up to rounding), masks
included, and whole models decode the same ids with it."""
import pytest
import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from svbench.attention import attention_for, few_query_attention, set_attention
from svbench.decoding.target import TargetRunner
from svbench.decoding.tree import DraftTree
from svbench.errors import SvbenchError
from svbench.models import tiny_llama


class Module(torch.nn.Module):
    num_key_value_groups, is_causal = 3, True


@pytest.mark.parametrize("mask", [None, "bool", "additive"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("queries", [1, 2, 6])
def test_one_query_path_equals_sdpa(mask, dtype, queries):
    """1..FEW_QUERIES queries; no mask means causal over the last `queries` positions (as sdpa's is_causal)."""
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(2, 9, queries, 64, generator=gen).to(dtype)   # (B, H, q, d)
    k = torch.randn(2, 3, 300, 64, generator=gen).to(dtype)  # (B, kv, L, d)
    v = torch.randn(2, 3, 300, 64, generator=gen).to(dtype)
    causal = torch.ones(queries, 300, dtype=torch.bool).tril(300 - queries)[None, None]  # (1, 1, q, L)
    allowed = (torch.rand(2, 1, queries, 300, generator=gen) > 0.3) & causal
    if mask is None:
        allowed = causal.expand(2, 1, queries, 300)
    m = {None: None, "bool": allowed,
         "additive": torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)}[mask]
    ours, _ = few_query_attention(Module(), q, k, v, m, scaling=0.125)
    # the reference: float32 sdpa over the same inputs, KV heads repeated as transformers' eager path does
    ref = torch.nn.functional.scaled_dot_product_attention(
        q.float(), k.float().repeat_interleave(3, 1), v.float().repeat_interleave(3, 1),
        attn_mask=allowed if m is None or mask == "bool" else m.float(), scale=0.125).transpose(1, 2)
    assert ours.shape == (2, queries, 9, 64)
    torch.testing.assert_close(ours.float(), ref, atol=2e-2, rtol=2e-2)
    if m is None and queries > 1:  # transformers passes no mask for several queries only when there is no past
        return  # (there sdpa's is_causal aligns top-left, which equals the bottom-right causal mask above)
    theirs, _ = sdpa_attention_forward(Module(), q, k, v, m, scaling=0.125)
    torch.testing.assert_close(ours.float(), theirs.float(), atol=2e-2, rtol=2e-2)


def test_auto_choice_and_bad_value():
    cpu = torch.device("cpu")
    assert attention_for("auto", torch.bfloat16, cpu) == "svbench_cpu"
    assert attention_for("auto", torch.float32, cpu) == "sdpa"
    assert attention_for("auto", torch.bfloat16, torch.device("cuda")) == "sdpa"
    with pytest.raises(SvbenchError, match="attention='flash' must be one of"):
        attention_for("flash", torch.bfloat16, cpu)


def step_logits(model, ids, prompt_len):
    """Next-token logits after each of ids[prompt_len:], fed one token at a time through the cache: (T, V)."""
    runner = TargetRunner(model)
    rows = [runner.prefill(ids[:prompt_len])[0]]
    for token in ids[prompt_len:-1]:
        rows.append(runner.forward_tree(DraftTree.chain(token, []))[0])
        runner.keep_path(DraftTree.chain(token, []), [])
    return torch.stack(rows).float()


@torch.inference_mode()
def test_one_query_steps_are_as_close_to_float32_as_sdpa():
    """A bf16 model decoding one token per forward: svbench_cpu's logits are no further from the same weights'
    float32 logits than sdpa's (both only round)."""
    model = tiny_llama(seed=0, hidden_size=192, num_heads=6, num_kv_heads=2, num_layers=3).to(torch.bfloat16)
    reference = tiny_llama(seed=0, hidden_size=192, num_heads=6, num_kv_heads=2, num_layers=3)
    reference.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
    ids = torch.randint(0, 512, (200,), generator=torch.Generator().manual_seed(1)).tolist()
    exact = step_logits(reference, ids, 150)
    errors = {}
    for name in ("sdpa", "svbench_cpu"):
        set_attention(model, name)
        assert model.config._attn_implementation == name
        errors[name] = (step_logits(model, ids, 150) - exact).abs().max().item()
    assert errors["svbench_cpu"] <= 1.5 * errors["sdpa"] + 1e-3, errors
