"""Greedy SD must reproduce the AR token ids exactly (fp32), for every policy, draft length and seed."""
import pytest
import torch

from conftest import DEVICE, noisy_copy
from svbench.decoding.drafters.draft_model import DraftModelDrafter
from svbench.decoding.loop import generate
from svbench.decoding.policies import ConfidencePolicy, FixedPolicy, HeuristicPolicy, SVIPPolicy
from svbench.models import layercut, tiny_llama

POLICIES = {
    "fixed1": lambda: FixedPolicy(1), "fixed3": lambda: FixedPolicy(3), "fixed8": lambda: FixedPolicy(8),
    "heuristic": HeuristicPolicy, "confidence": ConfidencePolicy,
    "svip": SVIPPolicy, "svip_eager": lambda: SVIPPolicy(h=0.9, c=0.2),
}


@pytest.fixture(scope="module")
def target():
    return tiny_llama(num_layers=3, seed=0).to(DEVICE)


@pytest.fixture(scope="module")
def drafts(target):
    # one that agrees often (long accepted runs, bonus tokens) and one that rarely does
    return {"close": noisy_copy(target, 0.005), "layercut": layercut(target, 1), "random": tiny_llama(num_layers=1, seed=9).to(DEVICE)}


@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("draft", ["close", "layercut", "random"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_greedy_sd_equals_ar(target, drafts, policy, draft, seed):
    gen = torch.Generator().manual_seed(seed)
    prompt = torch.randint(0, 256, (int(torch.randint(1, 20, (1,), generator=gen)),), generator=gen).tolist()
    max_new = 48
    ar = generate(target, prompt, max_new)
    sd = generate(target, prompt, max_new, DraftModelDrafter(drafts[draft]), POLICIES[policy]())
    assert sd.ids == ar.ids
    assert len(sd.ids) == max_new  # stops exactly at the budget
    assert sum(r.accepted + 1 for r in sd.rounds) == max_new
    if draft == "close" and policy == "fixed3":
        assert sum(r.accepted for r in sd.rounds) > 0.5 * sum(r.drafted for r in sd.rounds)


def test_close_draft_accepts_most_tokens(target, drafts):
    sd = generate(target, [1, 2, 3], 64, DraftModelDrafter(drafts["close"]), FixedPolicy(4))
    assert sum(r.accepted for r in sd.rounds) / sum(r.drafted for r in sd.rounds) > 0.6
    assert max(r.accepted for r in sd.rounds) == 4  # some rounds accept everything (+ bonus token)


@pytest.mark.parametrize("eos_position", [0, 1, 5, 17, 30])
def test_stops_exactly_at_eos(target, drafts, eos_position):
    prompt = [7, 8, 9]
    reference = generate(target, prompt, 40).ids
    eos = reference[eos_position]
    first = reference.index(eos)
    for draft in ("close", "random"):
        sd = generate(target, prompt, 40, DraftModelDrafter(drafts[draft]), FixedPolicy(5), eos_ids=(eos,))
        assert sd.ids == reference[: first + 1] and sd.hit_eos
    ar = generate(target, prompt, 40, eos_ids=(eos,))
    assert ar.ids == reference[: first + 1]
    ignored = generate(target, prompt, 40, DraftModelDrafter(drafts["close"]), FixedPolicy(5), eos_ids=(eos,),
                       ignore_eos=True)
    assert ignored.ids == reference


@pytest.mark.parametrize("max_new", [1, 2, 3, 7])
def test_budget_is_never_exceeded(target, drafts, max_new):
    sd = generate(target, [4, 5], max_new, DraftModelDrafter(drafts["close"]), FixedPolicy(8))
    assert sd.ids == generate(target, [4, 5], max_new).ids
    assert all(r.drafted <= max_new - 1 for r in sd.rounds)


def test_single_token_prompt(target, drafts):
    assert generate(target, [3], 10, DraftModelDrafter(drafts["close"]), SVIPPolicy()).ids == \
        generate(target, [3], 10).ids


def test_drafter_reuse_across_sequences(target, drafts):
    drafter = DraftModelDrafter(drafts["close"])
    for prompt in ([1, 2, 3], [9, 9], [4, 3, 2, 1]):
        assert generate(target, prompt, 20, drafter, FixedPolicy(3)).ids == generate(target, prompt, 20).ids


def test_ar_equals_transformers_generate(target):
    prompt = [3, 1, 4, 1, 5]
    with torch.inference_mode():
        reference = target.generate(torch.tensor([prompt], device=DEVICE), max_new_tokens=40, do_sample=False, eos_token_id=None,
                                    pad_token_id=0)
    assert generate(target, prompt, 40).ids == reference[0, len(prompt):].tolist()


@pytest.mark.parametrize("policy", ["fixed3", "svip"])
def test_reduced_vocabulary_draft_is_lossless(target, drafts, policy):
    subset = list(range(0, 512, 2))  # the draft can only propose even ids
    drafter = DraftModelDrafter(drafts["close"], vocab_ids=subset)
    sd = generate(target, [2, 7, 1], 48, drafter, POLICIES[policy]())
    assert sd.ids == generate(target, [2, 7, 1], 48).ids
    assert sum(r.accepted for r in sd.rounds) > 0


def test_accepted_count_stops_at_eos(target, drafts):
    reference = generate(target, [7, 8, 9], 40).ids
    eos = reference[10]
    sd = generate(target, [7, 8, 9], 40, DraftModelDrafter(drafts["close"]), FixedPolicy(8), eos_ids=(eos,))
    assert sd.ids == reference[:11] and sd.hit_eos
    # every emitted token is an accepted draft or the round's one target token, also in the EOS round
    assert sum(r.accepted + 1 for r in sd.rounds) == len(sd.ids)


# ---- property: EOS at any position, any policy, chain or CaPE tree --------------------------------
from hypothesis import given, settings, strategies as st  # noqa: E402

from svbench.decoding.drafters.draft_model import OFFICIAL_CAPE_BINS  # noqa: E402


@settings(max_examples=12, deadline=None)
@given(eos_position=st.integers(0, 29), policy=st.sampled_from(sorted(POLICIES)), cape=st.booleans(),
       prompt_seed=st.integers(0, 20))
def test_eos_at_any_position(target, drafts, eos_position, policy, cape, prompt_seed):
    gen = torch.Generator().manual_seed(prompt_seed)
    prompt = torch.randint(0, 256, (1 + prompt_seed % 7,), generator=gen).tolist()
    reference = generate(target, prompt, 30).ids
    eos = reference[eos_position]
    drafter = DraftModelDrafter(drafts["close"], cape_bins=OFFICIAL_CAPE_BINS if cape else None)
    out = generate(target, prompt, 30, drafter, POLICIES[policy](), eos_ids=(eos,))
    assert out.ids == reference[: reference.index(eos) + 1] and out.hit_eos
    assert sum(r.accepted + 1 for r in out.rounds) == len(out.ids)


# ---- bfloat16 on pair=tiny: runs, consistent rounds, AR's ids up to near-ties ---------------------------------
BF16_QUESTIONS = ["hello", "What is the capital of France?", "Write a poem about the sea.", "1 2 3 4"]


@pytest.mark.parametrize("method", ["vanilla_sd", "eagle2"])
def test_bfloat16_tiny_pair_matches_ar_up_to_near_ties(method):
    """pair=tiny loaded in bfloat16 (load_pair), vanilla SD (layer-cut draft) and EAGLE-2 (fresh head) vs AR.

    Exact equality with AR is not guaranteed in bf16: AR scores one token per forward, SD's verify forward
    root + drafts at once, and bf16 matmuls of different shapes round differently, so where the target's
    top two logits nearly tie either may win. Measured: on the second question both methods leave AR at
    token 14, where in float32 AR's token leads by 0.12 (6.127 vs 6.007) and in bf16 the two tie at 6.0625;
    the other questions are reproduced exactly. Asserted: max_new tokens, consistent per-round counts,
    AR's ids up to the first divergence, and there a float32 logit gap <= TIE_BOUND["bfloat16"] (the bound
    svbench's runner uses to call a divergence a near-tie)."""
    import copy

    from svbench.benchmarks import build_prompt
    from svbench.config import build_drafter, group_config
    from svbench.decoding.drafters import drafter_class
    from svbench.decoding.target import TargetRunner
    from svbench.models import load_pair
    from svbench.decoding.agreement import TIE_BOUND

    method_cfg = group_config("method", method)
    pair = load_pair(group_config("pair", "tiny"), dtype="bfloat16", device=str(DEVICE),
                     drafter_cls=drafter_class(method_cfg))
    assert pair.target.dtype == torch.bfloat16 and next(pair.network.parameters()).dtype == torch.bfloat16
    drafter, max_new, exact = build_drafter({"method": method_cfg}, pair), 48, 0
    reference = copy.deepcopy(pair.target).float()
    for question in BF16_QUESTIONS:
        prompt = build_prompt(pair.tokenizer, "chat", [question], [])
        ar = generate(pair.target, prompt, max_new)
        sd = generate(pair.target, prompt, max_new, drafter, FixedPolicy(4))
        assert len(ar.ids) == len(sd.ids) == max_new
        assert (sd.rounds[0].drafted, sd.rounds[0].accepted) == (0, 0)  # the prefill round drafts nothing
        for r in sd.rounds[1:]:
            assert 0 <= r.accepted <= r.drafted and r.accepted <= 4  # accepted depth <= FixedPolicy(4)'s cap
            assert r.drafted <= (4 if method == "vanilla_sd" else drafter.total_token - 1)
        assert sum(r.accepted + 1 for r in sd.rounds) == max_new  # each round: accepted drafts + 1 target token
        assert sd.ids[0] == ar.ids[0]  # the same prefill forward emits the first token
        if sd.ids == ar.ids:
            exact += 1
            continue
        pos = next(i for i, (a, b) in enumerate(zip(ar.ids, sd.ids)) if a != b)
        with torch.inference_mode():
            logits = TargetRunner(reference).prefill(prompt + ar.ids[:pos])[0].float()  # (V,)
        gap = float(logits[ar.ids[pos]] - logits[sd.ids[pos]])
        assert abs(gap) <= TIE_BOUND["bfloat16"], (question, pos, gap)
    assert exact >= 2  # most questions are reproduced exactly
