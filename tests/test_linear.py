"""linear=onednn: the bf16 linear layers of the target and the draft network through oneDNN with reordered
weights give F.linear's bits, and fall back to F.linear when the weight they were reordered from changed (cast,
written, copied)."""
import copy

import pytest
import torch
from test_config import cfg_with
from torch import nn

from svbench.config import generation_settings, group_config, validate
from svbench.decoding.loop import generate
from svbench.decoding.target import TargetRunner
from svbench.decoding.tree import DraftTree
from svbench.errors import SvbenchError
from svbench.linear import _REORDERED, OneDNNLinear, available, use_linear
from svbench.models import load_pair, tiny_llama

needs_onednn = pytest.mark.skipif(not available(), reason="torch without oneDNN bf16")


def bf16_model():
    return tiny_llama(seed=0, hidden_size=192, num_heads=6, num_kv_heads=2, num_layers=3).to(torch.bfloat16)


@torch.inference_mode()
def forwards(model, ids):
    """Logits of a 150-token prefill, a 1-token step and a 5-node tree after it: the shapes of AR and SD."""
    runner = TargetRunner(model)
    out = [runner.prefill(ids[:150])]
    out.append(runner.forward_tree(DraftTree.chain(ids[150], [])))
    runner.keep_path(DraftTree.chain(ids[150], []), [])
    out.append(runner.forward_tree(DraftTree.from_parents(ids[151:156], [-1, 0, 0, 1, 1])))
    return out


class CountedCalls:
    """Counts torch.ops.mkldnn._linear_pointwise calls while active."""

    def __enter__(self):
        self.n, self.real = 0, torch.ops.mkldnn._linear_pointwise

        def counted(*args):
            self.n += 1
            return self.real(*args)
        torch.ops.mkldnn._linear_pointwise = counted
        return self

    def __exit__(self, *exc):
        torch.ops.mkldnn._linear_pointwise = self.real


@needs_onednn
def test_reordered_weights_give_f_linear_bits():
    ids = torch.randint(0, 512, (160,), generator=torch.Generator().manual_seed(1)).tolist()
    plain, fast = bf16_model(), bf16_model()
    n_linear = sum(type(m) is nn.Linear for m in fast.modules())
    assert use_linear(fast, "onednn") == n_linear > 0
    assert sum(type(m) is OneDNNLinear for m in fast.modules()) == n_linear
    with CountedCalls() as calls:
        got = forwards(fast, ids)
    assert calls.n == 3 * n_linear  # every linear layer of every forward took the oneDNN path
    for a, b in zip(forwards(plain, ids), got):
        assert torch.equal(a, b)


@needs_onednn
def test_changed_weights_fall_back_to_f_linear():
    ids = torch.randint(0, 512, (160,), generator=torch.Generator().manual_seed(2)).tolist()
    fast = bf16_model()
    use_linear(fast, "onednn")
    twin = copy.deepcopy(fast)  # a copy holds new weights: no reordered copy stands for them
    assert all(_REORDERED.get(m) is None for m in twin.modules())
    with CountedCalls() as calls:
        forwards(twin, ids)
    assert calls.n == 0
    reference = copy.deepcopy(fast).float()  # the runner's float32 reference for near-ties
    for a, b in zip(forwards(copy.deepcopy(bf16_model()).float(), ids), forwards(reference, ids)):
        assert torch.equal(a, b)
    with torch.no_grad():  # replaced by an equal Parameter: not the tensor it was reordered from
        for m in fast.modules():
            if isinstance(m, nn.Linear):
                m.weight = nn.Parameter(m.weight.detach().clone())
    with CountedCalls() as calls:
        forwards(fast, ids)
    assert calls.n == 0
    use_linear(fast, "onednn")
    with torch.no_grad():  # written in place: the reordered copy is stale
        for m in fast.modules():
            if isinstance(m, nn.Linear):
                m.weight.mul_(0.5)
    halved = bf16_model()
    with torch.no_grad():
        for m in halved.modules():
            if isinstance(m, nn.Linear):
                m.weight.mul_(0.5)
    for a, b in zip(forwards(halved, ids), forwards(fast, ids)):
        assert torch.equal(a, b)


@needs_onednn
def test_option_reaches_the_target():
    pair_cfg = group_config("pair", "tiny")
    fast = load_pair(pair_cfg, dtype="bfloat16", linear="onednn")
    plain = load_pair(pair_cfg, dtype="bfloat16")
    assert not any(type(m) is OneDNNLinear for m in plain.target.modules())
    prompt = list(range(3, 40))
    with CountedCalls() as calls:
        got = generate(fast.target, prompt, 24).ids
    assert calls.n > 0
    assert got == generate(plain.target, prompt, 24).ids
    with pytest.raises(SvbenchError, match="no bfloat16 linear layer"):
        load_pair(pair_cfg, dtype="float32", linear="onednn")


def test_option_validates_and_keeps_old_hashes():
    c = validate(cfg_with("pair=tiny"))
    assert "linear" not in generation_settings(c)  # runs made before the option keep their config hash
    assert generation_settings(validate(cfg_with("pair=tiny", "linear=onednn")))["linear"] == "onednn"
    with pytest.raises(SvbenchError, match="linear='fast' must be one of"):
        validate(cfg_with("pair=tiny", "linear=fast"))
    with pytest.raises(SvbenchError, match="linear=onednn applies to bfloat16 on a CPU"):
        validate(cfg_with("pair=tiny", "linear=onednn", "dtype=float32"))


@needs_onednn
@pytest.mark.parametrize("method", ["vanilla_sd", "glide", "eagle2", "eagle3"])
def test_option_reaches_the_draft_network(method):
    """load_pair puts the draft network's bf16 linears on oneDNN too: every drafting forward goes through them
    (counted against a pair with only the target reordered, which does the same rounds), and the drafts,
    so the per-round counts, are plain's."""
    from svbench.config import build_drafter
    from svbench.decoding.drafters import drafter_class
    from svbench.decoding.policies import FixedPolicy

    method_cfg, pair_cfg = group_config("method", method), group_config("pair", "tiny")
    runs = {}
    for linear in ("plain", "target", "onednn"):
        pair = load_pair(pair_cfg, dtype="bfloat16", drafter_cls=drafter_class(method_cfg),
                         linear="plain" if linear == "target" else linear)
        if linear == "target":
            use_linear(pair.target, "onednn")
        layers = [m for m in pair.network.modules() if isinstance(m, nn.Linear)]
        assert layers and all((type(m) is OneDNNLinear) == (linear == "onednn") for m in layers)
        drafter = build_drafter({"method": method_cfg}, pair)
        with CountedCalls() as calls:
            out = generate(pair.target, list(range(3, 40)), 24, drafter, FixedPolicy(3))
        runs[linear] = (out.ids, [(r.drafted, r.accepted) for r in out.rounds], calls.n)
    assert runs["plain"][2] == 0 and runs["target"][2] > 0
    draft_calls = runs["onednn"][2] - runs["target"][2]  # the same rounds: the target's calls are equal
    drafted_steps = sum(r.steps for r in out.rounds)
    # every drafting step ran all the network's linears on oneDNN but at most one (EAGLE-3's fc over the
    # target's three layers runs once per round); measured: all of them for the others
    assert draft_calls >= drafted_steps * (len(layers) - 1) and drafted_steps > 0
    assert runs["onednn"][:2] == runs["target"][:2] == runs["plain"][:2]
