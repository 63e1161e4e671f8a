"""Greedy SD must reproduce the AR token ids exactly (fp32), for every policy, draft length and seed."""
import pytest
import torch

from conftest import noisy_copy
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
    return tiny_llama(num_layers=3, seed=0)


@pytest.fixture(scope="module")
def drafts(target):
    # one that agrees often (long accepted runs, bonus tokens) and one that rarely does
    return {"close": noisy_copy(target, 0.005), "layercut": layercut(target, 1), "random": tiny_llama(num_layers=1, seed=9)}


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
        reference = target.generate(torch.tensor([prompt]), max_new_tokens=40, do_sample=False, eos_token_id=None,
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
