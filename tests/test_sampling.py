"""Under sampling, SD's output distribution is the target's: the joint law of the first three generated
tokens, on a 6-token vocabulary, checked with a chi-square test (fixed seeds, so the test is deterministic)."""
import itertools

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from conftest import DEVICE, noisy_copy
from svbench.decoding.drafters.draft_model import DraftModelDrafter
from svbench.decoding.loop import generate
from svbench.decoding.policies import ArFallback, FixedPolicy, SVIPPolicy
from svbench.decoding.verify import Sampling, warp
from svbench.models import tiny_llama

V, LENGTH, N = 6, 3, 3000
PROMPT = [1, 4, 2]
SAMPLING = Sampling(temperature=1.0)


def small_llama(seed, num_layers):
    return tiny_llama(vocab_size=V, hidden_size=32, num_layers=num_layers, num_heads=2, num_kv_heads=1,
                      intermediate_size=64, init_std=0.5, seed=seed, eos_token_id=None).to(DEVICE)


@pytest.fixture(scope="module")
def target():
    return small_llama(5, 2)


def exact_joint(model, sampling, prompt=PROMPT):
    """P(x1, x2, x3 | prompt) by enumeration."""
    probs = {}
    with torch.no_grad():
        for prefix in itertools.chain.from_iterable(itertools.product(range(V), repeat=k) for k in range(LENGTH)):
            logits = model(input_ids=torch.tensor([list(prompt) + list(prefix)], device=model.device)).logits[0, -1]
            probs[prefix] = warp(logits, sampling)
    joint = np.zeros(V**LENGTH)
    for cell, seq in enumerate(itertools.product(range(V), repeat=LENGTH)):
        joint[cell] = np.prod([float(probs[seq[:i]][seq[i]]) for i in range(LENGTH)])
    return joint / joint.sum()


def sampled_counts(target, drafter, policy, sampling, n=N, prompt=PROMPT):
    counts = np.zeros(V**LENGTH)
    for seed in range(n):
        gen = torch.Generator(device=target.device).manual_seed(seed)
        ids = generate(target, list(prompt), LENGTH, drafter, policy, sampling, generator=gen).ids
        counts[int(np.ravel_multi_index(ids, (V,) * LENGTH))] += 1
    return counts


def pooled_pvalue(counts, probs):
    """Chi-square over cells, with cells of expected count < 5 pooled into one."""
    expected = probs * counts.sum()
    small = expected < 5
    obs = np.append(counts[~small], counts[small].sum())
    exp = np.append(expected[~small], expected[small].sum())
    keep = exp > 0
    return chisquare(obs[keep], exp[keep] * obs[keep].sum() / exp[keep].sum()).pvalue


@pytest.mark.parametrize("draft_kind", ["agrees_often", "rarely_agrees"])
def test_sd_sampling_matches_target_distribution(target, draft_kind):
    # measured acceptance rates with FixedPolicy(2): ~0.76 (agrees often) and ~0.27 (rarely agrees)
    draft = noisy_copy(target, 0.05) if draft_kind == "agrees_often" else small_llama(77, 1)
    joint = exact_joint(target, SAMPLING)
    counts = sampled_counts(target, DraftModelDrafter(draft), FixedPolicy(2), SAMPLING)
    assert pooled_pvalue(counts, joint) > 1e-3
    if draft_kind == "rarely_agrees":  # the statistic has power: the draft's own law is rejected
        assert pooled_pvalue(counts, exact_joint(draft, SAMPLING)) < 1e-6


def test_sd_sampling_with_top_k_and_svip(target):
    sampling = Sampling(temperature=0.8, top_k=4)
    joint = exact_joint(target, sampling)
    counts = sampled_counts(target, DraftModelDrafter(noisy_copy(target, 0.05)), SVIPPolicy(h=0.6), sampling, n=2000)
    assert pooled_pvalue(counts, joint) > 1e-3


def test_ar_fallback_keeps_the_target_law(target):
    """Target-only rounds mixed with drafting rounds (a draft that rarely agrees makes the switch pause after
    most drafting rounds; timings decide the rest): the output law is still the target's."""
    class Counting(ArFallback):
        skipped = 0

        def draft_now(self):
            go = super().draft_now()
            Counting.skipped += not go
            return go

    policy = FixedPolicy(1)
    policy.ar_fallback = Counting(alpha=1.0, pause=1)  # alpha 1: decides from the first drafting round on
    counts = sampled_counts(target, DraftModelDrafter(small_llama(77, 1)), policy, SAMPLING, n=2000)
    assert Counting.skipped > 500  # (round 2 is target-only after most rejected first rounds)
    assert pooled_pvalue(counts, exact_joint(target, SAMPLING)) > 1e-3


def test_reduced_vocabulary_sampling_is_exact(target):
    joint = exact_joint(target, SAMPLING)
    drafter = DraftModelDrafter(noisy_copy(target, 0.05), vocab_ids=[0, 2, 3, 5])  # q = 0 on tokens 1 and 4
    counts = sampled_counts(target, drafter, FixedPolicy(2), SAMPLING, n=2000)
    assert pooled_pvalue(counts, joint) > 1e-3


# ---- tree methods: deterministic candidates verified with the siblings rule -----------------------

def perturbed(module, scale, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_((torch.randn(p.shape, generator=gen) * scale).to(p.device))
    return module


# measured with these drafts (200 runs): accepted draft tokens per round 0.19 (glide), 0.14 (glide_cape, 16
# off-spine accepted paths), 0.10 (eagle2, 9 off-spine), 0.08 (eagle3, 370 rounds): the siblings rule is exercised
@pytest.mark.parametrize("method", ["glide", "glide_cape", "eagle2", "eagle3"])
def test_tree_methods_sample_the_target_distribution(target, method):
    from svbench.decoding.drafters.eagle import EagleDrafter
    from svbench.decoding.drafters.eagle3 import Eagle3Drafter
    from svbench.decoding.drafters.glide import GlideDrafter
    from svbench.nets.eagle import head_from_target
    from svbench.nets.eagle3 import eagle3_from_target
    from svbench.nets.glide import glide_from_target

    if method == "eagle2":
        drafter = EagleDrafter(perturbed(head_from_target(target).to(DEVICE), 0.3), top_k=2, depth=2, total_token=6)
    elif method == "eagle3":  # a reduced draft vocabulary (every other token): the d2t mapping is exercised
        head = eagle3_from_target(target, list(range(0, target.config.vocab_size, 2)))
        drafter = Eagle3Drafter(perturbed(head.to(DEVICE), 0.3), top_k=2, depth=2, total_token=6)
    else:
        glide = perturbed(glide_from_target(target).to(DEVICE), 0.1)
        drafter = GlideDrafter(glide, [3, 3, 3, 2, 2, 2, 2, 2, 1, 1, 1] if method == "glide_cape" else None)
    joint = exact_joint(target, SAMPLING)
    counts = sampled_counts(target, drafter, SVIPPolicy(h=0.9) if method.startswith("eagle") else FixedPolicy(2),
                            SAMPLING, n=2000)
    assert pooled_pvalue(counts, joint) > 1e-3
