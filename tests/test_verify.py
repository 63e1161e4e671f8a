"""Acceptance rules: greedy on chains and trees; sampling rules reproduce the target distribution."""
import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from svbench.decoding.tree import DraftTree
from svbench.decoding.verify import Sampling, verify, verify_greedy, verify_sampling, warp

V = 6


def one_hot_logits(rows):
    logits = torch.full((len(rows), V), -10.0)
    for i, tok in enumerate(rows):
        logits[i, tok] = 10.0
    return logits


def test_greedy_chain_accepts_longest_matching_prefix_then_correction():
    tree = DraftTree.chain(0, [1, 2, 3])
    assert verify_greedy(tree, one_hot_logits([1, 2, 5, 4])) == ([1, 2], 5)
    assert verify_greedy(tree, one_hot_logits([1, 2, 3, 4])) == ([1, 2, 3], 4)  # bonus token
    assert verify_greedy(tree, one_hot_logits([4, 2, 3, 4])) == ([], 4)


def test_greedy_tree_follows_the_matching_branch():
    # root -> {1: tok 1, 2: tok 2}; node 2 -> {3: tok 3}; node 1 -> {4: tok 4}
    tree = DraftTree.from_parents([0, 1, 2, 3, 4], [-1, 0, 0, 2, 1])
    assert verify_greedy(tree, one_hot_logits([2, 0, 3, 5, 0])) == ([2, 3], 5)
    assert verify_greedy(tree, one_hot_logits([1, 4, 0, 0, 1])) == ([1, 4], 1)


def _distribution(samples):
    return np.bincount(np.asarray(samples), minlength=V)


P = torch.tensor([0.05, 0.30, 0.10, 0.25, 0.20, 0.10])
Q_CLOSE = torch.tensor([0.05, 0.35, 0.10, 0.20, 0.20, 0.10])
Q_FAR = torch.tensor([0.60, 0.02, 0.30, 0.02, 0.03, 0.03])


def _first_token_samples(make_tree, p_rows, n, seed):
    """The first emitted token of each verification (accepted draft or correction)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        tree = make_tree(gen)
        path, nxt = verify_sampling(tree, p_rows, gen)
        out.append(tree.tokens[path[0]] if path else nxt)
    return out


@pytest.mark.parametrize("q", [Q_CLOSE, Q_FAR], ids=["close", "far"])
def test_sampled_chain_rule_gives_target_distribution(q):
    def make_tree(gen):
        y = int(torch.multinomial(q, 1, generator=gen))
        probs = torch.stack([torch.zeros(V), q])
        return DraftTree.chain(0, [y], draft_probs=probs)

    n = 20000
    counts = _distribution(_first_token_samples(make_tree, torch.stack([P, P]), n, seed=1))
    assert chisquare(counts, P.numpy() * n).pvalue > 1e-3
    # the test can fail: the draft's own distribution is rejected
    if q is Q_FAR:
        assert chisquare(counts, q.numpy() * n).pvalue < 1e-6


def test_deterministic_siblings_rule_gives_target_distribution():
    tree = DraftTree.from_parents([0, 3, 1, 4], [-1, 0, 0, 0])  # three top-k siblings under the root
    n = 20000
    counts = _distribution(_first_token_samples(lambda gen: tree, P.expand(4, V), n, seed=2))
    assert chisquare(counts, P.numpy() * n).pvalue > 1e-3


def test_siblings_rule_descends_with_the_conditional_distribution():
    # root -> a(tok 1) -> b(tok 2). After accepting a, the child's row must be used.
    tree = DraftTree.from_parents([0, 1, 2], [-1, 0, 1])
    p_root = torch.tensor([0.0, 1.0, 0, 0, 0, 0])  # always accept node 1
    gen = torch.Generator().manual_seed(3)
    n = 10000
    seconds = []
    for _ in range(n):
        path, nxt = verify_sampling(tree, torch.stack([p_root, P, P]), gen)
        seconds.append(tree.tokens[path[1]] if len(path) > 1 else nxt)
    assert chisquare(_distribution(seconds), P.numpy() * n).pvalue > 1e-3


def test_warp_top_k_top_p_and_temperature():
    logits = torch.log(P)
    assert torch.allclose(warp(logits, Sampling(1.0)), P, atol=1e-6)
    top2 = warp(logits, Sampling(1.0, top_k=2))
    assert set(top2.nonzero().flatten().tolist()) == {1, 3}
    nucleus = warp(logits, Sampling(1.0, top_p=0.5))  # 0.30 + 0.25 reach 0.5
    assert set(nucleus.nonzero().flatten().tolist()) == {1, 3}
    assert torch.allclose(nucleus.sum(), torch.tensor(1.0))
    cold = warp(logits, Sampling(0.1))
    assert int(cold.argmax()) == 1 and float(cold.max()) > 0.8


def test_verify_dispatches_on_temperature():
    tree = DraftTree.chain(0, [1])
    assert verify(tree, one_hot_logits([1, 2]), Sampling(0.0)) == ([1], 2)
