"""Acceptance rules: greedy on chains and trees; sampling rules reproduce the target distribution."""
import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from svbench.decoding.tree import DraftTree
from svbench.decoding.verify import Sampling, row_argmax, sample_rows, verify, verify_greedy, verify_sampling, warp

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


# ---- property tests: random trees, random target distributions -----------------------------------
from hypothesis import given, settings, strategies as st  # noqa: E402

from svbench.decoding.tree import DraftTree as _Tree  # noqa: E402
from svbench.decoding.verify import verify_greedy as _greedy, verify_sampling as _sampling  # noqa: E402


@st.composite
def random_trees(draw, vocab=6):
    """A topological tree whose siblings carry distinct tokens (as top-k candidates do)."""
    n = draw(st.integers(1, 14))
    parents, tokens, used = [-1], [draw(st.integers(0, vocab - 1))], {0: set()}
    for i in range(1, n):
        parent = draw(st.integers(0, i - 1))
        free = [t for t in range(vocab) if t not in used[parent]]
        if not free:
            break
        token = draw(st.sampled_from(free))
        used[parent].add(token)
        used[i] = set()
        parents.append(parent)
        tokens.append(token)
    return _Tree.from_parents(tokens, parents)


def brute_force_greedy(tree, argmax):
    best = []
    def walk(node, path):
        nonlocal best
        if len(path) > len(best):
            best = list(path)
        for child in tree.children()[node]:
            if tree.tokens[child] == argmax[node]:
                walk(child, path + [child])
    walk(0, [])
    return best


@settings(max_examples=200, deadline=None)
@given(tree=random_trees(), seed=st.integers(0, 10_000))
def test_greedy_path_is_the_longest_matching_root_path(tree, seed):
    logits = torch.randn(len(tree), 6, generator=torch.Generator().manual_seed(seed)) * 3
    argmax = logits.argmax(-1).tolist()
    path, token = _greedy(tree, logits)
    assert path == brute_force_greedy(tree, argmax)
    assert token == argmax[path[-1] if path else 0]


@settings(max_examples=200, deadline=None)
@given(tree=random_trees(), seed=st.integers(0, 10_000))
def test_sampled_path_is_a_root_path_and_the_bonus_token_is_possible(tree, seed):
    gen = torch.Generator().manual_seed(seed)
    probs = torch.softmax(torch.randn(len(tree), 6, generator=gen) * 2, -1)
    probs[:, int(torch.randint(0, 6, (1,), generator=gen))] = 0.0  # some token the target never emits
    probs /= probs.sum(-1, keepdim=True)
    path, token = _sampling(tree, probs, gen)
    node = 0
    for child in path:
        assert tree.parents[child] == node
        node = child
    assert float(probs[node, token]) > 0  # never a token the target gives probability 0
    if tree.children()[node]:  # every candidate at the stopping node was rejected: none is re-emitted
        assert token not in [tree.tokens[c] for c in tree.children()[node]]


@pytest.mark.parametrize("vocab", [49152, 32000, 8192 + 1, 300])
def test_row_argmax_is_the_first_maximum_like_torch(vocab):
    """The blocked CPU argmax returns torch's index: random rows, ties across and inside blocks, bf16."""
    g = torch.Generator().manual_seed(vocab)
    x = torch.randn(7, vocab, generator=g).to(torch.bfloat16)  # bf16: many exact ties
    x[1] = 0.0  # all tied: index 0
    x[2, vocab // 3] = x[2, vocab - 1] = 100.0  # tie in two blocks: the earlier one
    x[3, 5] = x[3, 6] = 100.0  # tie inside one block
    x[4, vocab - 1] = 100.0  # the very last index
    assert torch.equal(row_argmax(x), x.float().argmax(-1))
    assert row_argmax(x)[2].item() == vocab // 3 and row_argmax(x)[3].item() == 5


def test_sample_rows_draws_each_rows_distribution():
    """The two-level inverse-CDF sampler: one-hot rows (first, block-boundary, last token) are drawn exactly,
    zero-weight tokens never, unnormalised weights over a vocabulary that is no multiple of the block follow
    their distribution (chi-square over 200,000 draws), and a seeded generator repeats its draws."""
    vocab = 1000  # 3 full blocks of 256 + a padded one
    onehots = torch.zeros(4, vocab)
    onehots[0, 0] = onehots[1, 255] = onehots[2, 256] = onehots[3, vocab - 1] = 2.5
    assert sample_rows(onehots).tolist() == [0, 255, 256, vocab - 1]
    g = torch.Generator().manual_seed(0)
    weights = torch.rand(vocab, generator=g) ** 4 * 3.0  # unnormalised, skewed
    weights[[1, 255, 256, 511, 512, 700, 998, 999]] = 0.0  # zeros inside, at block edges and at the tail
    weights[300] = 40.0  # one dominant token
    counts = torch.zeros(vocab)
    draws = torch.Generator().manual_seed(1)
    for _ in range(50):
        picks = sample_rows(weights.expand(4000, vocab), draws)
        counts += torch.bincount(picks, minlength=vocab).float()
    assert counts[weights == 0].sum() == 0
    expected = weights / weights.sum() * counts.sum()
    assert chisquare(counts[weights > 0].numpy(), expected[weights > 0].numpy()).pvalue > 1e-3
    same = [sample_rows(weights.expand(64, vocab), torch.Generator().manual_seed(7)) for _ in range(2)]
    assert torch.equal(same[0], same[1])
