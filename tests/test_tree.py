"""Tree masks, position ids, and that one tree forward + cache compaction equal plain chain forwards."""
from hypothesis import given, settings, strategies as st
import torch
from transformers import DynamicCache

from svbench.decoding.target import TargetRunner
from svbench.decoding.tree import DraftTree
from svbench.models import tiny_llama

# root 0; 1,2 children of root; 3 child of 1; 4,5 children of 3; 6 child of 2
TOKENS = [11, 12, 13, 14, 15, 16, 17]
PARENTS = [-1, 0, 0, 1, 3, 3, 2]


def test_depths_children_and_chain_flag():
    tree = DraftTree.from_parents(TOKENS, PARENTS)
    assert tree.depths == [0, 1, 1, 2, 3, 3, 2]
    assert tree.children() == [[1, 2], [3], [6], [4, 5], [], [], []]
    assert not tree.is_chain
    assert DraftTree.from_parents([1, 2, 3], [-1, 0, 1]).is_chain
    assert DraftTree.chain(5, [6, 7]).parents == [-1, 0, 1]


def test_mask_sees_prefix_ancestors_and_self_only():
    tree = DraftTree.from_parents(TOKENS, PARENTS)
    mask = tree.attention_mask(prefix_len=3, dtype=torch.float32)
    assert mask.shape == (1, 1, 7, 10)
    allowed = mask[0, 0] == 0
    assert allowed[:, :3].all()  # every node sees the cached prefix
    expected = {0: {0}, 1: {0, 1}, 2: {0, 2}, 3: {0, 1, 3}, 4: {0, 1, 3, 4}, 5: {0, 1, 3, 5}, 6: {0, 2, 6}}
    for node, visible in expected.items():
        assert {j for j in range(7) if allowed[node, 3 + j]} == visible
    assert tree.position_ids(3).tolist() == [[3, 4, 4, 5, 6, 6, 5]]


def _chain_logits(model, ids):
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0]


def _tree_after_prefix(seed, prefix):
    """A target whose cache holds prefix[:-1], and the test tree rooted at prefix[-1]."""
    target = TargetRunner(tiny_llama(seed=seed))
    target.prefill(prefix[:-1])
    return target, DraftTree.from_parents([prefix[-1]] + TOKENS[1:], PARENTS)


def test_tree_forward_equals_chain_forward_on_every_path():
    prefix = [5, 9, 2, 7]
    target, tree = _tree_after_prefix(3, prefix)
    model = target.model
    with torch.no_grad():
        tree_logits = target.forward_tree(tree)
    for node in range(len(tree)):
        path, j = [], node
        while j != -1:
            path.append(j)
            j = tree.parents[j]
        seq = prefix[:-1] + [tree.tokens[i] for i in reversed(path)]
        torch.testing.assert_close(tree_logits[node], _chain_logits(model, seq)[-1], atol=1e-4, rtol=1e-4)


def test_cache_compaction_after_a_non_trivial_path():
    prefix = [5, 9, 2, 7]
    target, tree = _tree_after_prefix(4, prefix)
    model = target.model
    with torch.no_grad():
        target.forward_tree(tree)
        target.keep_path(tree, [1, 3, 5])  # skips node 2 and 4: needs a gather, not a crop
        assert target.cached_len == len(prefix) + 3
        nxt = DraftTree.chain(99, [])
        logits = target.forward_tree(nxt)[0]
    seq = prefix + [TOKENS[1], TOKENS[3], TOKENS[5], 99]
    torch.testing.assert_close(logits, _chain_logits(model, seq)[-1], atol=1e-4, rtol=1e-4)
    reference = DynamicCache(config=model.config)
    with torch.no_grad():
        model(input_ids=torch.tensor([seq]), cache=reference, use_cache=True)
    for mine, ref in zip(target.cache.layers, reference.layers):
        n = mine.get_seq_length()  # the static buffers hold n valid rows
        torch.testing.assert_close(mine.keys[:, :, :n], ref.keys, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(mine.values[:, :, :n], ref.values, atol=1e-4, rtol=1e-4)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 10**6), min_size=0, max_size=40))
def test_ancestor_matrix_matches_walking_the_parents(seeds):
    """Random topological trees: [i, j] is set exactly when walking i's parents reaches j (or j == i)."""
    parents = [-1] + [seed % (i + 1) for i, seed in enumerate(seeds)]  # node i + 1's parent < i + 1
    tree = DraftTree.from_parents(list(range(len(parents))), parents)
    got = tree.ancestor_matrix()
    for i in range(len(parents)):
        walk, node = {i}, i
        while parents[node] >= 0:
            node = parents[node]
            walk.add(node)
        assert set(torch.nonzero(got[i]).flatten().tolist()) == walk
