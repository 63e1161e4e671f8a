"""svbench_cpu attention: the one-query low-precision path equals transformers' sdpa (up to rounding), masks
included, and whole models decode the same ids with it."""
import pytest
import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from svbench.attention import FEW_QUERIES, attention_for, few_query_attention, grouped_sdpa, set_attention
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
    assert attention_for("auto", torch.float32, cpu) == "svbench_sdpa"
    assert attention_for("auto", torch.bfloat16, torch.device("cuda")) == "svbench_sdpa"
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


def eager_order(q, k, v, mask, scale):
    """Eager attention's order of operations on the packed layout: q k^T, * scale, mask over every column,
    softmax in float32, @ v (what few_query_attention computed before it skipped the visible prefix)."""
    B, H, Tq, d = q.shape
    kv, L = k.shape[1], k.shape[2]
    s = torch.matmul(k, q.reshape(B, kv, H // kv * Tq, d).transpose(-1, -2)).transpose(-1, -2)
    s = s.reshape(B, kv, H // kv, Tq, L) * scale
    if mask is None and Tq > 1:
        mask = torch.ones(Tq, L, dtype=torch.bool).tril(L - Tq)[None, None]
    if mask is not None:
        m = mask[:, :, :, :L].unsqueeze(2)
        s = s.masked_fill(~m, torch.finfo(s.dtype).min) if m.dtype == torch.bool else s + m
    p = torch.softmax(s.float(), dim=-1).to(v.dtype)
    return torch.matmul(p.reshape(B, kv, H // kv * Tq, L), v).view(B, H, Tq, d).transpose(1, 2)


@pytest.mark.parametrize("mask", [None, "tree", "tree-bool", "blocked-prefix"])
@pytest.mark.parametrize("scale", [0.125, 0.1])
@pytest.mark.parametrize("queries", [1, 5])
def test_masking_only_the_unseen_columns_gives_eager_bits(mask, scale, queries):
    """Skipping the columns every query sees (the cached prefix) changes no bit; a mask that blocks prefix
    columns too is applied whole; a mask written in place after its first use is re-read."""
    gen = torch.Generator().manual_seed(queries)
    q = torch.randn(1, 9, queries, 64, generator=gen).to(torch.bfloat16)
    k, v = (torch.randn(1, 3, 400, 64, generator=gen).to(torch.bfloat16) for _ in range(2))
    tree = (torch.rand(queries, queries, generator=gen) > 0.5) | torch.eye(queries, dtype=torch.bool)
    allowed = torch.ones(1, 1, queries, 400, dtype=torch.bool)
    allowed[..., 400 - queries:] = tree
    if mask == "blocked-prefix":
        allowed[..., 7] = False
    m = {None: None, "tree": torch.zeros(allowed.shape, dtype=torch.bfloat16).masked_fill(~allowed, -1e30),
         "tree-bool": allowed, "blocked-prefix": allowed}[mask]
    ours, _ = few_query_attention(Module(), q, k, v, m, scaling=scale)
    assert torch.equal(ours, eager_order(q, k, v, m, scale))
    if m is not None:
        m[..., 3] = False if m.dtype == torch.bool else -1e30  # in place: the cached prefix length is stale
        ours, _ = few_query_attention(Module(), q, k, v, m, scaling=scale)
        assert torch.equal(ours, eager_order(q, k, v, m, scale))


@pytest.mark.parametrize("mask", [None, "bool", "additive"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("queries", [1, 2, 12])
@pytest.mark.parametrize("batch", [1, 2])
def test_grouped_sdpa_equals_transformers_sdpa(mask, dtype, queries, batch):
    """svbench_sdpa (query heads folded into their KV head's rows, mask rows repeated) gives transformers'
    sdpa's output, boolean and additive masks, batch masks and shared ones; a mask written in place is re-read."""
    gen = torch.Generator().manual_seed(queries + 10 * batch)
    q = torch.randn(batch, 9, queries, 64, generator=gen).to(dtype)  # (B, H, q, d)
    k, v = (torch.randn(batch, 3, 200, 64, generator=gen).to(dtype) for _ in range(2))  # (B, kv, L, d)
    causal = torch.ones(queries, 200, dtype=torch.bool).tril(200 - queries)[None, None]  # (1, 1, q, L)
    allowed = (torch.rand(batch, 1, queries, 200, generator=gen) > 0.3) & causal  # every query sees its own key
    m = {None: None, "bool": allowed,
         "additive": torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)}[mask]
    tol = {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 2e-2, "rtol": 2e-2}
    for _ in range(2):
        ours, _ = grouped_sdpa(Module(), q, k, v, m, scaling=0.125)
        theirs, _ = sdpa_attention_forward(Module(), q, k, v, m, scaling=0.125)
        assert ours.shape == (batch, queries, 9, 64)
        torch.testing.assert_close(ours, theirs, **tol)
        if m is None:
            break
        m[..., :queries, 5] = False if m.dtype == torch.bool else torch.finfo(dtype).min  # in place: re-read


def test_grouped_sdpa_takes_any_output_strides_and_falls_back_on_per_head_masks(monkeypatch):
    """CUDA's memory-efficient sdpa returns a non-contiguous output: grouped_sdpa must not .view it. A mask that
    is not one (B|1, 1, Tq, L) mask for every head (here one per head) goes to transformers' sdpa unfolded."""
    gen = torch.Generator().manual_seed(7)
    q = torch.randn(2, 9, 5, 16, generator=gen)  # (B, H, q, d)
    k, v = (torch.randn(2, 3, 30, 16, generator=gen) for _ in range(2))  # (B, kv, L, d)
    allowed = torch.ones(5, 30, dtype=torch.bool).tril(25)[None, None].expand(2, 1, 5, 30).clone()  # (B, 1, q, L)
    theirs, _ = sdpa_attention_forward(Module(), q, k, v, allowed, scaling=0.25)
    per_head = allowed.expand(2, 9, 5, 30).clone()  # (B, H, q, L)
    torch.testing.assert_close(grouped_sdpa(Module(), q, k, v, per_head, scaling=0.25)[0], theirs)
    real = torch.nn.functional.scaled_dot_product_attention
    strided = lambda *a, **kw: real(*a, **kw).transpose(-1, -2).contiguous().transpose(-1, -2)  # same values
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", strided)
    ours, _ = grouped_sdpa(Module(), q, k, v, allowed, scaling=0.25)
    assert ours.shape == (2, 5, 9, 16)
    torch.testing.assert_close(ours, theirs)


@torch.inference_mode()
def test_tree_verify_forwards_read_the_cache_in_place(monkeypatch):
    """The default attention (auto) never calls transformers' repeat_kv on the target's cache after the prefill:
    every verify forward of EAGLE-2's tree (several queries, a mask) and of a chain reads K/V in place, in
    float32 (svbench_sdpa) and bfloat16 (svbench_cpu up to 8 queries, svbench_sdpa above), with the ids of AR."""
    import transformers.integrations.sdpa_attention as sdpa_module
    from svbench.decoding.drafters.eagle import EagleDrafter
    from svbench.decoding.loop import generate
    from svbench.decoding.policies import FixedPolicy
    from svbench.nets.eagle import head_from_target

    calls = []
    real = sdpa_module.repeat_kv
    monkeypatch.setattr(sdpa_module, "repeat_kv", lambda x, n: calls.append(x.shape) or real(x, n))
    for dtype in (torch.float32, torch.bfloat16):
        target = tiny_llama(seed=0, hidden_size=96, num_heads=6, num_kv_heads=2, num_layers=2).to(dtype)
        set_attention(target, "auto")
        head = head_from_target(target).to(dtype)
        prompt = list(range(3, 40))
        reference = generate(target, prompt, 12).ids
        calls.clear()
        out = generate(target, prompt, 12, EagleDrafter(head, top_k=4, depth=3, total_token=16), FixedPolicy(4))
        assert out.ids == reference or dtype == torch.bfloat16  # (bf16: the tiny random model may tie)
        assert any(r.drafted > FEW_QUERIES for r in out.rounds)  # trees past svbench_cpu's few queries
        assert calls == [], calls
        # control: transformers' own sdpa does repeat the cache on the same forwards
        set_attention(target, "sdpa")
        generate(target, prompt, 12, EagleDrafter(head, top_k=4, depth=3, total_token=16), FixedPolicy(4))
        assert calls and all(shape[2] >= len(prompt) for shape in calls)
        calls.clear()
