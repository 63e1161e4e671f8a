"""GliDe, GliDe+CaPE and EAGLE-2 on tiny models (fp32): greedy output == AR for every policy, the sampled
output law == the target's, tree invariants, cache bookkeeping, CaPE widths, official checkpoint formats.

The drafts are trained here for a few seconds with svbench's own recipes on the tiny target's greedy
answers to the test prompts (memorised: a random target does not generalise), so that rounds accept
multi-token paths, including sibling (off-spine) nodes: an untrained draft is almost never accepted and
would leave the tree bookkeeping untested.
"""
import json

import pytest
import torch
from hypothesis import given, settings, strategies as st
from omegaconf import OmegaConf

from svbench.decoding.drafters.draft_model import OFFICIAL_CAPE_BINS, DraftModelDrafter, cape_width
from svbench.decoding.drafters.eagle import EagleDrafter
from svbench.decoding.drafters.eagle3 import Eagle3Drafter
from svbench.decoding.drafters.glide import GlideDrafter
from svbench.decoding.drafters.pld import PromptLookupDrafter
from svbench.decoding.loop import generate
from svbench.decoding.policies import ArFallback, ConfidencePolicy, FixedPolicy, HeuristicPolicy, SVIPPolicy
from svbench.decoding.target import TargetRunner
from svbench.decoding.tree import DraftTree
from svbench.decoding.verify import Sampling
from svbench.errors import SvbenchError
from svbench.models import layercut, tiny_llama
from svbench.nets.eagle import head_from_target, load_head, save_head
from svbench.nets.glide import glide_from_target, keys_before, load_glide
from svbench.train.__main__ import make_batch
from svbench.train.eval import lengths_at, round_roots
from svbench.train.recipes import Eagle3Recipe, EagleRecipe, GlideRecipe

POLICIES = {
    "fixed1": lambda: FixedPolicy(1), "fixed4": lambda: FixedPolicy(4), "heuristic": HeuristicPolicy,
    "confidence": ConfidencePolicy, "svip": SVIPPolicy, "svip_eager": lambda: SVIPPolicy(h=0.9, c=0.2),
}
METHODS = {
    "glide": lambda nets: GlideDrafter(nets["glide"]),
    "glide_cape": lambda nets: GlideDrafter(nets["glide"], OFFICIAL_CAPE_BINS),
    "glide_cape_small": lambda nets: GlideDrafter(nets["glide"], [3, 3, 2, 2, 2, 2, 2, 2, 1, 1, 1]),
    "glide2_reencode": lambda nets: GlideDrafter(nets["glide2"], reencode_accepted=True),
    "glide2_cape_reencode": lambda nets: GlideDrafter(nets["glide2"], [3, 3, 2, 2, 2, 2, 2, 2, 1, 1, 1], True),
    "eagle2": lambda nets: EagleDrafter(nets["eagle"], top_k=4, depth=4, total_token=16),
    "eagle2_wide": lambda nets: EagleDrafter(nets["eagle"], top_k=10, depth=5, total_token=60),
    "eagle2_max": lambda nets: EagleDrafter(nets["eagle"], top_k=3, depth=3, total_token=8, entropy_aggregate="max"),
    "eagle2_two_layers": lambda nets: EagleDrafter(nets["eagle_two_layers"], top_k=4, depth=4, total_token=16),
    "eagle3": lambda nets: Eagle3Drafter(nets["eagle3"], top_k=4, depth=4, total_token=16),
    "eagle3_wide": lambda nets: Eagle3Drafter(nets["eagle3"], top_k=10, depth=7, total_token=60),
}


@pytest.fixture(scope="module")
def target():
    return tiny_llama(num_layers=3, seed=0)


def off_spine(path) -> bool:
    """An accepted tree path that leaves the first-child chain (node ids 1, 2, 3, ...): the cache gather path."""
    return path != list(range(1, len(path) + 1))


def prompt_for(seed):
    """One of 16 fixed prompts of 1..15 tokens."""
    gen = torch.Generator().manual_seed(100 + seed % 16)
    return torch.randint(0, 256, (1 + seed % 16 % 15,), generator=gen).tolist()


def train_quickly(recipe, target, steps=150, lr=1e-2, seed=0):
    """A few seconds of svbench's own training on the target's greedy answers to the test prompts."""
    torch.manual_seed(seed)
    rows = []
    for b in range(16):
        prompt = prompt_for(b)
        rows.append({"ids": prompt + generate(target, prompt, 48).ids, "prompt_len": len(prompt)})
    params = [p for p in recipe.module.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=lr)
    recipe.module.train()
    for step in range(steps):
        batch = [(step * 8 + i) % len(rows) for i in range(8)]  # (keys: rows are cached by index)
        ids, attention, answer = make_batch([rows[i] for i in batch], 64, 0)
        loss, _, _ = recipe.loss(ids, attention, answer, keys=batch)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return recipe.module.eval()


@pytest.fixture(scope="module")
def nets(target):
    cfg = OmegaConf.create({"num_layers": 1, "block_size": 5, "init_layer": None, "ce_weight": 1.0,
                            "feature_noise": 0.02})
    return {"glide": train_quickly(GlideRecipe(cfg, target, None), target),
            "glide2": train_quickly(GlideRecipe(OmegaConf.merge(cfg, {"num_layers": 2}), target, None), target),
            "eagle": train_quickly(EagleRecipe(cfg, target, None), target),
            "eagle_two_layers": train_quickly(EagleRecipe(OmegaConf.merge(cfg, {"num_layers": 2}), target, None),
                                              target),
            "eagle3": train_quickly(Eagle3Recipe(OmegaConf.merge(cfg, {"ttt_steps": 3}), target, list(range(0, 512, 2))
                                                 + [1, 3, 5]), target)}


@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("seed", [3, 12])
def test_greedy_equals_ar(target, nets, method, policy, seed):
    prompt, max_new = prompt_for(seed), 40
    ar = generate(target, prompt, max_new)
    sd = generate(target, prompt, max_new, METHODS[method](nets), POLICIES[policy]())
    assert sd.ids == ar.ids
    assert sum(r.accepted + 1 for r in sd.rounds) == max_new
    assert all(r.accepted <= r.drafted for r in sd.rounds)


@pytest.mark.parametrize("method", ["vanilla_sd", "eagle2", "eagle2_wide", "eagle2_two_layers", "eagle3"])
def test_eval_at_the_engine_round_roots_gives_its_accepted_lengths(target, nets, method):
    """svbench.train.eval's drafting from each engine round's root (a fresh drafter, the target prefilled up to
    the root) accepts what the engine accepted in that round, capped at the round's steps: the engine's
    acceptance accounting and the eval's agree round by round (experiments/eval_vs_engine.py relies on it).
    GliDe is left out: by default it keeps the draft's stale K/V of accepted tokens, which a prefill does not."""
    make = (lambda: DraftModelDrafter(layercut(target, 2))) if method == "vanilla_sd" else \
        (lambda: METHODS[method](nets))
    prompt = prompt_for(5)
    sd = generate(target, prompt, 40, make(), FixedPolicy(3))
    roots = round_roots([(r.drafted, r.accepted, r.steps) for r in sd.rounds], len(prompt))
    assert len(roots) == sum(1 for r in sd.rounds if r.drafted) > 1
    lengths = lengths_at(make(), prompt + sd.ids, [t for t, _, _ in roots],
                         None if method == "vanilla_sd" else target)
    accepted = [a for _, _, a in roots]
    assert [min(n, steps) for n, (_, steps, _) in zip(lengths, roots)] == accepted
    assert 0 < sum(accepted) < sum(steps for _, steps, _ in roots)  # some drafts accepted, some rejected


class ScriptedFallback(ArFallback):
    """Drafts in the rounds the pattern says (repeated), whatever the timings."""

    def __init__(self, pattern):
        super().__init__()
        self.pattern = pattern

    def reset(self):
        super().reset()
        self.asked = 0

    def draft_now(self):
        self.asked += 1
        return self.pattern[(self.asked - 1) % len(self.pattern)]


@pytest.mark.parametrize("method", sorted(METHODS) + ["draft_lm", "pld"])
@pytest.mark.parametrize("policy", ["fixed4", "svip_eager"])
def test_target_only_rounds_keep_every_drafter_in_step(target, nets, method, policy):
    """ar_fallback's target-only rounds (draft length 0) between drafting rounds: the drafters catch up on
    the skipped tokens (the EAGLE heads assert that their cache and the target's stay in step), greedy
    output stays AR's, and the skipped rounds are recorded as drafting nothing."""
    make = {**METHODS, "draft_lm": lambda nets: DraftModelDrafter(layercut(target, 2)),
            "pld": lambda nets: PromptLookupDrafter()}[method]
    pattern = [True, False, False, True, True, False, False, False]
    for seed in (3, 12):
        prompt = prompt_for(seed)
        pol = POLICIES[policy]()
        pol.ar_fallback = ScriptedFallback(pattern)
        drafter = make(nets)
        ar = generate(target, prompt, 40)
        sd = generate(target, prompt, 40, drafter, pol)
        assert sd.ids == ar.ids
        drafted = [r.steps > 0 for r in sd.rounds[1:]]
        skipped = [not pattern[i % len(pattern)] for i in range(len(drafted))]
        assert all(not d for d, skip in zip(drafted, skipped) if skip)
        assert all(r.drafted == 0 and r.accepted == 0 for r, skip in zip(sd.rounds[1:], skipped) if skip)
        if method != "pld":  # (PLD finds nothing to copy in some rounds)
            assert all(drafted[i] for i in range(len(drafted) - 1) if not skipped[i])
        assert sum(r.accepted + 1 for r in sd.rounds) == 40


@pytest.mark.parametrize("method", sorted(METHODS))
def test_trained_drafts_exercise_multi_token_and_sibling_paths(target, nets, method, monkeypatch):
    """Not a speed claim: the test drafts must be good enough that accepted paths are long and, for trees,
    sometimes leave the first-child chain (the cache gather path)."""
    drafter, accepted, rounds, sibling_paths = METHODS[method](nets), 0, 0, 0
    original_keep = TargetRunner.keep_path

    def spy(self, tree, path):
        nonlocal sibling_paths
        sibling_paths += off_spine(path)
        return original_keep(self, tree, path)

    monkeypatch.setattr(TargetRunner, "keep_path", spy)
    for seed in range(6):
        out = generate(target, prompt_for(seed), 40, drafter, FixedPolicy(4))
        accepted += sum(r.accepted for r in out.rounds)
        rounds += len(out.rounds) - 1
    assert accepted / rounds > 0.5  # mean accepted draft tokens per round
    if method not in ("glide", "glide2_reencode"):  # chains never leave the spine
        assert sibling_paths > 0


def test_eos_and_budget(target, nets):
    prompt = prompt_for(3)
    reference = generate(target, prompt, 30).ids
    eos = reference[11]
    for method in METHODS:
        out = generate(target, prompt, 30, METHODS[method](nets), FixedPolicy(4), eos_ids=(eos,))
        assert out.ids == reference[: reference.index(eos) + 1] and out.hit_eos
        for budget in (1, 2, 5):
            assert generate(target, prompt, budget, METHODS[method](nets), FixedPolicy(4)).ids == reference[:budget]


def test_drafter_reuse_across_sequences(target, nets):
    for method in METHODS:
        drafter = METHODS[method](nets)
        for seed in (4, 5, 4):
            assert generate(target, prompt_for(seed), 25, drafter, SVIPPolicy()).ids == \
                generate(target, prompt_for(seed), 25).ids


@pytest.mark.parametrize("net, mask_context", [("glide", True), ("glide2", True), ("glide2", False)])
def test_glide_incremental_cache_matches_a_full_forward(target, nets, net, mask_context):
    """The drafter's cached, round-by-round forward equals one uncached forward of the draft over the
    same tokens reading the same (verified) target K/V, each token the keys before its position (with 2
    layers the context's upper-layer K/V depend on it), or all of them with mask_context=False."""
    draft, ids = nets[net], prompt_for(7) + [5, 9, 11]
    cache = TargetRunner(target)
    cache.prefill(ids[:-1])  # the root ids[-1] is not cached
    drafter = GlideDrafter(draft, mask_context=mask_context)
    drafter.reset(cache)
    tree = drafter.get_candidates(ids, FixedPolicy(3), 3, Sampling())
    full = list(ids)
    P = cache.cached_len  # the buffers hold P valid rows
    kv = [(cache.cache.layers[j].keys[:, :, :P], cache.cache.layers[j].values[:, :, :P]) for j in draft.target_layers()]
    for token in tree.tokens[1:]:
        positions = torch.arange(len(full))[None]
        with torch.no_grad():
            hidden = draft(torch.tensor([full]), positions, kv,
                           cross_mask=keys_before(positions, P, torch.float32) if mask_context else None)
        assert int(draft.logits(hidden[0, -1]).argmax()) == token
        full.append(token)


def test_glide_inference_cross_mask_is_trainings_with_the_least_staleness():
    """keys_before (inference, verified context) is training's block mask with blocks of one position: a
    query sees the target keys before its position, never its own or later ones."""
    from svbench.train.recipes import block_mask

    T = 9
    assert torch.equal(keys_before(torch.arange(T)[None], T, torch.float32), block_mask(T, 1, torch.float32))
    partial = keys_before(torch.arange(4, 9)[None], 6, torch.float32)[0, 0]  # positions 4..8 over 6 keys
    assert ((partial == 0).sum(-1)).tolist() == [4, 5, 6, 6, 6]


@pytest.mark.parametrize("kv_heads", [1, 3, 9])
@pytest.mark.parametrize("masked", [False, True])
def test_glide_cross_attention_folds_query_heads_instead_of_repeating_the_target_cache(kv_heads, masked):
    """GQA without copying the target's K/V: query heads folded into their KV head's rows give the same output
    as repeating each KV head for its query heads (the reference), with and without the cross mask."""
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    from svbench.nets.glide import CrossAttention

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=32)
    config.large_num_attention_heads, config.large_head_dim = 9, 8
    attn = CrossAttention(config)
    B, T, S, hd = 2, 5, 7, 8
    hidden, cos, sin = torch.randn(B, T, 32), torch.randn(B, T, hd), torch.randn(B, T, hd)
    keys, values = torch.randn(B, kv_heads, S, hd), torch.randn(B, kv_heads, S, hd)
    mask = None  # per batch row its own (B, 1, T, S) mask, as a batched caller may pass
    if masked:
        mask = torch.cat([keys_before(torch.arange(first, first + T)[None], S, torch.float32) for first in (2, 4)])
    groups = 9 // kv_heads
    q = attn.q_proj(hidden).view(B, T, 9, hd).transpose(1, 2)
    q, _ = apply_rotary_pos_emb(q, q, cos, sin)
    ref = torch.nn.functional.scaled_dot_product_attention(
        q, keys.repeat_interleave(groups, 1), values.repeat_interleave(groups, 1), attn_mask=mask)
    ref = attn.o_proj(ref.transpose(1, 2).reshape(B, T, -1))
    torch.testing.assert_close(attn(hidden, keys, values, cos, sin, mask), ref)


@pytest.mark.parametrize("reencode", [False, True])
def test_glide_reencodes_the_old_root_and_accepted_tokens_when_asked(target, nets, reencode):
    """reencode_accepted: each round's first draft forward re-feeds the old root, the accepted tokens and the
    new root (accepted + 2 tokens); without it only what the draft cache lacks (the accepted tokens' K/V
    are kept)."""
    drafter = GlideDrafter(nets["glide2"], reencode_accepted=reencode)
    fed, original = [], GlideDrafter._forward

    def spy(self, input_ids, new_ids):
        fed.append(len(new_ids))
        return original(self, input_ids, new_ids)

    GlideDrafter._forward = spy
    try:
        out = generate(target, prompt_for(5), 40, drafter, FixedPolicy(4))
    finally:
        GlideDrafter._forward = original
    drafting = [r for r in out.rounds if r.drafted > 0]  # (the prefill's round drafts nothing)
    firsts, i = [], 0
    for r in drafting:  # the first forward of a round, then one per further drafted token
        firsts.append(fed[i])
        i += r.drafted
    # without: the new root, plus the last drafted token when all were accepted (it was never fed)
    want = [len(prompt_for(5)) + 1] + [r.accepted + 2 if reencode else 1 + (r.accepted == r.drafted)
                                       for r in drafting[:-1]]
    assert firsts == want and any(r.accepted > 0 for r in out.rounds)
    assert out.ids == generate(target, prompt_for(5), 40).ids


def test_cape_width_bins():
    assert [cape_width(OFFICIAL_CAPE_BINS, m) for m in (0.0, 0.29, 0.3, 0.59, 0.6, 0.79, 0.8, 0.99, 1.0)] == \
        [8, 8, 6, 6, 4, 4, 2, 2, 2]


@given(st.lists(st.lists(st.integers(0, 511), max_size=3), min_size=1, max_size=6))
@settings(max_examples=50, deadline=None)
def test_cape_tree_hands_over_the_depths_that_its_parents_give(sibling_lists):
    """cape_tree knows each node's depth (spine step i and its siblings: depth i) and hands it over, so the
    tree is not walked node by node; the depths are those its parent links give."""
    from svbench.decoding.drafters.draft_model import cape_tree

    spine = list(range(1, len(sibling_lists) + 1))
    handed, original = [], DraftTree.from_parents.__func__

    def spy(cls, *args, **kwargs):
        handed.append(kwargs.get("depths"))
        return original(cls, *args, **kwargs)
    DraftTree.from_parents = classmethod(spy)
    try:
        tree = cape_tree(0, spine, sibling_lists, [0.5] * len(spine))
    finally:
        DraftTree.from_parents = classmethod(original)
    assert handed and handed[0] is not None
    walked = DraftTree.from_parents(tree.tokens, tree.parents)
    assert tree.depths == walked.depths and tree.steps == walked.steps == len(spine)
    assert tree.tokens == [0] + [t for s, leaves in zip(spine, sibling_lists) for t in [s] + leaves]


def test_cape_widths_follow_the_drafts_top1_probability(target, nets):
    """At spine step i the tree hangs k_i = cape_width(bins, max q_i) nodes off the previous spine node: the
    spine token, then the other top-k_i tokens of q_i as leaves. q_i is recomputed here by an uncached
    forward of the GliDe draft over prompt + spine so far, reading the same (verified) target K/V."""
    # one width per decile of the top-1 probability (the official bins share widths across deciles), so that the
    # widths seen show how far the trained draft's confidences spread, whatever CPU trained it
    bins, draft, widths_seen = (11, 10, 9, 8, 7, 6, 5, 4, 3, 2), nets["glide"], set()
    assert draft.vocab_ids is None  # draft index == token id
    for seed in range(1, 15):  # prompts of 2..15 tokens: the cached prefix ids[:-1] is never empty
        cache, ids = TargetRunner(target), prompt_for(seed)
        cache.prefill(ids[:-1])
        drafter = GlideDrafter(draft, bins)
        drafter.reset(cache)
        tree = drafter.get_candidates(ids, FixedPolicy(4), 4, Sampling())
        P = cache.cached_len  # the buffers hold P valid rows
        kv = [(cache.cache.layers[j].keys[:, :, :P], cache.cache.layers[j].values[:, :, :P]) for j in draft.target_layers()]
        children, node, prefix = tree.children(), 0, list(ids)
        for step in range(4):
            with torch.no_grad():
                hidden = draft(torch.tensor([prefix]), torch.arange(len(prefix))[None], kv)
                q = torch.softmax(draft.logits(hidden[0, -1]).float(), dim=-1)
            width = cape_width(bins, float(q.max()))
            kids = children[node]
            assert [tree.tokens[c] for c in kids] == q.topk(width).indices.tolist(), (seed, step)
            assert all(not children[c] for c in kids[1:])  # siblings are leaves
            widths_seen.add(width)
            node = kids[0]  # the spine continues from the step's first (greedy) node
            prefix.append(tree.tokens[node])
        assert not children[node] and tree.depths[node] == 4  # FixedPolicy(4): four spine steps
    assert len(widths_seen) >= 3  # the draft's confidences span several deciles


@settings(max_examples=40, deadline=None)
@given(top_k=st.integers(1, 6), depth=st.integers(0, 5), total_token=st.integers(2, 40), max_len=st.integers(1, 8),
       prompt_seed=st.integers(0, 50), svip=st.booleans())
def test_eagle_tree_invariants(target, top_k, depth, total_token, max_len, prompt_seed, svip):
    head = head_from_target(target)
    with torch.no_grad():
        head.layers[0].mlp.down_proj.weight.normal_(0, 0.2, generator=torch.Generator().manual_seed(prompt_seed))
    cache, ids = TargetRunner(target), prompt_for(prompt_seed) + [7]  # ids[-1] = the root
    cache.prefill(ids[:-1])
    drafter = EagleDrafter(head, top_k, depth, total_token)
    drafter.reset(cache)
    policy = SVIPPolicy() if svip else FixedPolicy(max_len)
    tree = drafter.get_candidates(ids, policy, max_len, Sampling())
    assert len(tree) <= total_token
    assert max(tree.depths) <= min(depth + 1, max_len)
    # mask and positions against each node's root path, found here by walking parents
    n, mask, positions = len(tree), tree.attention_mask(5, torch.float32)[0, 0], tree.position_ids(5)[0].tolist()
    assert mask.shape == (n, 5 + n) and bool((mask[:, :5] == 0).all())  # every node sees the cached prefix
    for i in range(n):
        assert i == 0 or 0 <= tree.parents[i] < i  # parents kept and earlier (topological)
        path, j = set(), i
        while j != -1:
            path.add(j)
            j = tree.parents[j]
        assert {j for j in range(n) if mask[i, 5 + j] == 0} == path
        assert positions[i] == 5 + len(path) - 1
    assert drafter.cache.get_seq_length() == len(ids) - 1  # the head keeps verified positions only


def test_tree_mask_and_positions_on_a_hand_built_tree():
    """A tree whose node order is not by depth (node 3 is a depth-1 node after a depth-2 one)."""
    #       0
    #     /   \
    #    1     3
    #   / \    |
    #  2   6   5
    #  |
    #  4
    tree = DraftTree.from_parents([10, 11, 12, 13, 14, 15, 16], [-1, 0, 1, 0, 2, 3, 1])
    expected = torch.tensor([[1, 0, 0, 0, 0, 0, 0],
                             [1, 1, 0, 0, 0, 0, 0],
                             [1, 1, 1, 0, 0, 0, 0],
                             [1, 0, 0, 1, 0, 0, 0],
                             [1, 1, 1, 0, 1, 0, 0],
                             [1, 0, 0, 1, 0, 1, 0],
                             [1, 1, 0, 0, 0, 0, 1]], dtype=torch.bool)
    assert torch.equal(tree.ancestor_matrix(), expected)
    mask = tree.attention_mask(4, torch.bfloat16)
    assert mask.shape == (1, 1, 7, 11) and mask.dtype == torch.bfloat16
    low = torch.finfo(torch.bfloat16).min
    assert torch.equal(mask[0, 0, :, :4], torch.zeros(7, 4, dtype=torch.bfloat16))
    assert torch.equal(mask[0, 0, :, 4:], torch.where(expected, 0.0, low).to(torch.bfloat16))
    assert tree.position_ids(4).tolist() == [[4, 5, 6, 5, 7, 6, 6]]
    assert tree.depths == [0, 1, 2, 1, 3, 2, 2] and not tree.is_chain


def test_a_two_layer_eagle_head_starts_as_the_identity_drafts_with_two_cached_layers_and_keeps_the_official_names(
        target, nets, tmp_path):
    """num_layers=2: a fresh head maps f_t to f_t (every residual branch silent); the drafter caches both layers;
    layer 1 keeps its input norm and layer 0 has none, under the official EAGLE-1/2 names, through save and load."""
    fresh = head_from_target(target, num_layers=2)
    features = torch.randn(1, 5, target.config.hidden_size)
    with torch.no_grad():
        torch.testing.assert_close(fresh(torch.arange(5)[None], features, torch.arange(5)[None]), features)
    head = nets["eagle_two_layers"]
    names = set(head.state_dict())
    assert "layers.1.input_layernorm.weight" in names
    assert not any(n.startswith("layers.0.input_layernorm") for n in names)
    cache, ids = TargetRunner(target), prompt_for(7) + [9]
    cache.prefill(ids[:-1])
    drafter = EagleDrafter(head, top_k=4, depth=4, total_token=16)
    drafter.reset(cache)
    drafter.get_candidates(ids, FixedPolicy(4), 4, Sampling())
    assert len(drafter.cache.layers) == 2 and drafter.cache.get_seq_length() == len(ids) - 1
    save_head(head, tmp_path / "two")
    loaded = load_head(tmp_path / "two", target)
    assert len(loaded.layers) == 2 and loaded.config.num_hidden_layers == 2
    saved, kept = head.state_dict(), loaded.state_dict()  # the folder holds bf16 weights
    assert set(saved) == set(kept) and all(torch.equal(kept[k], saved[k].to(torch.bfloat16).float()) for k in saved)
    with pytest.raises(SvbenchError, match="num_layers=0"):
        head_from_target(target, num_layers=0)


def test_eagle_bad_options(target):
    head = head_from_target(target)
    with pytest.raises(SvbenchError, match="entropy_aggregate"):
        EagleDrafter(head, entropy_aggregate="median")
    with pytest.raises(SvbenchError, match="total_token"):
        EagleDrafter(head, total_token=1)


# ---- official checkpoint formats ------------------------------------------------------------------

def write_official_eagle(folder, target, bias: bool):
    """A folder in the released EAGLE-1/2 format: a 1-layer LlamaConfig (+ "bias" for LLaMA3-style heads),
    pytorch_model.bin with embed_tokens, fc, layers.0.* (no input_layernorm)."""
    head = head_from_target(target, bias=bias)
    with torch.no_grad():
        for p in head.parameters():
            p.normal_(0, 0.05)
    state = dict(head.state_dict())
    state["embed_tokens.weight"] = target.model.embed_tokens.weight.detach().clone()
    config = {k: v for k, v in head.config.to_dict().items() if k not in ("transformers_version",)}
    config.update(architectures=["LlamaForCausalLM"])
    if not bias:
        config["bias"] = False
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config, default=str))
    torch.save(state, folder / "pytorch_model.bin")
    return state


@pytest.mark.parametrize("bias", [True, False])
def test_official_eagle_head_loads(target, tmp_path, bias):
    state = write_official_eagle(tmp_path / "eagle", target, bias)
    assert all(not k.startswith("layers.0.input_layernorm") for k in state)
    head = load_head(tmp_path / "eagle", target)
    assert (head.fc.bias is not None) == bias
    assert torch.equal(head.fc.weight, state["fc.weight"])
    assert torch.equal(head.layers[0].self_attn.q_proj.weight, state["layers.0.self_attn.q_proj.weight"])
    prompt = prompt_for(1)
    assert generate(target, prompt, 20, EagleDrafter(head, 3, 3, 10), FixedPolicy(3)).ids == \
        generate(target, prompt, 20).ids


def test_official_eagle_head_for_another_target_is_refused(target, tmp_path):
    write_official_eagle(tmp_path / "eagle", tiny_llama(num_layers=2, hidden_size=32, seed=3), True)
    with pytest.raises(SvbenchError, match="does not fit this target"):
        load_head(tmp_path / "eagle", target)


def write_official_glide(folder, target, num_layers=1):
    """The released GliDe format: a LlamaConfig with large_* keys; pytorch_model.bin with the draft's OWN
    embed_tokens and lm_head and model.layers.{i}.{self_attn,cross_attn,mlp,...}."""
    draft = glide_from_target(target, num_layers)
    with torch.no_grad():
        for p in draft.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    state = dict(draft.state_dict())
    state["model.embed_tokens.weight"] = torch.randn_like(target.model.embed_tokens.weight) * 0.3
    state["lm_head.weight"] = torch.randn_like(target.lm_head.weight) * 0.3
    config = draft.config.to_dict()
    for key in ("large_num_key_value_heads", "large_num_hidden_layers", "large_rope_theta"):
        config.pop(key)  # the official config has only large_hidden_size / _num_attention_heads / _head_dim
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config, default=str))
    torch.save(state, folder / "pytorch_model.bin")
    return state


def test_official_glide_draft_loads(target, tmp_path):
    state = write_official_glide(tmp_path / "glide", target, num_layers=2)
    assert "model.layers.1.cross_attn.q_proj.weight" in state and "model.layers.0.cross_attn.k_proj.weight" not in state
    draft = load_glide(tmp_path / "glide", target)
    assert torch.equal(draft.embed_weight, state["model.embed_tokens.weight"])
    assert torch.equal(draft.head_weight, state["lm_head.weight"])
    assert torch.equal(draft.model.layers[1].cross_attn.o_proj.weight, state["model.layers.1.cross_attn.o_proj.weight"])
    assert draft.target_layers() == [1, 2]  # the top L_D of the target's 3 layers
    prompt = prompt_for(2)
    for bins in (None, OFFICIAL_CAPE_BINS):
        assert generate(target, prompt, 20, GlideDrafter(draft, bins), SVIPPolicy()).ids == \
            generate(target, prompt, 20).ids


def test_glide_draft_for_another_target_is_refused(target, tmp_path):
    write_official_glide(tmp_path / "glide", tiny_llama(num_layers=2, num_heads=2, num_kv_heads=1, seed=3))
    with pytest.raises(SvbenchError, match="made for a target"):
        load_glide(tmp_path / "glide", target)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SvbenchError, match="no config.json"):
        load_glide(tmp_path / "empty", target)


def test_tree_size_is_tuned_once_and_cached(target, nets, tmp_path, monkeypatch):
    from svbench import tree_size
    from svbench.models import ModelPair, tiny_tokenizer

    monkeypatch.setenv("SVBENCH_CACHE", str(tmp_path))
    pair = ModelPair("tiny", target, nets["eagle"], tiny_tokenizer(), (256,))
    best = tree_size.tuned_total_token(pair, top_k=4, depth=3, prompts=[prompt_for(s) for s in range(4)])
    assert best in tree_size.CANDIDATES
    entry = next(iter(json.loads((tmp_path / "tree_size.json").read_text()).values()))
    assert entry["total_token"] == best and entry["calibration_rounds"] > 0
    acc = [entry["acc"][str(n)] for n in tree_size.CANDIDATES]
    assert acc == sorted(acc) and acc[-1] > 0.5  # a bigger tree never accepts less
    monkeypatch.setattr(tree_size, "verify_ms", lambda *a, **k: pytest.fail("re-measured despite the cache"))
    assert tree_size.tuned_total_token(pair, top_k=4, depth=3) == best


def write_official_eagle3(folder, head, with_vocab_maps=True):
    """An EAGLE-3 head in the official release's format: config.json without rope_theta, pytorch_model.bin
    with fc, midlayer.*, norm, lm_head (+ d2t, t2d; + embed_tokens, which the loader ignores)."""
    folder.mkdir(parents=True)
    c = head.config
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "hidden_size": c.hidden_size, "intermediate_size": c.intermediate_size,
        "num_attention_heads": c.num_attention_heads, "num_key_value_heads": c.num_key_value_heads,
        "num_hidden_layers": 1, "rms_norm_eps": c.rms_norm_eps, "hidden_act": "silu", "vocab_size": c.vocab_size,
        "draft_vocab_size": head.lm_head.out_features, "max_position_embeddings": 2048, "pad_token_id": 0,
        "tie_word_embeddings": False, "torch_dtype": "float16"}))
    state = {k: v.clone() for k, v in head.state_dict().items() if with_vocab_maps or k not in ("d2t", "t2d")}
    state["embed_tokens.weight"] = head.embed_weight.clone()
    torch.save(state, folder / "pytorch_model.bin")


def test_official_eagle3_head_loads_and_drafts_the_same(target, nets, tmp_path):
    """An official-format EAGLE-3 folder maps onto svbench's module: same tensors, the d2t mapping, base-10000
    RoPE from a config without rope_theta; with the head's own RoPE set to 10000, the same trees."""
    from svbench.nets.eagle3 import load_eagle3

    head = nets["eagle3"]
    write_official_eagle3(tmp_path / "official", head)
    loaded = load_eagle3(tmp_path / "official", target)
    assert loaded.config.rope_parameters["rope_theta"] == 10000.0
    assert loaded.vocab_ids == head.vocab_ids and loaded.vocab_ids[:3] == [0, 1, 2] and 4 in loaded.vocab_ids
    for name, tensor in head.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    loaded.rotary_emb = head.rotary_emb  # same RoPE as the svbench head (the tiny target's theta)
    prompt = prompt_for(9)
    a = generate(target, prompt, 30, Eagle3Drafter(head, 4, 4, 16), FixedPolicy(4))
    b = generate(target, prompt, 30, Eagle3Drafter(loaded, 4, 4, 16), FixedPolicy(4))
    assert a.ids == b.ids and [r.accepted for r in a.rounds] == [r.accepted for r in b.rounds]
    # a full-vocabulary official head may ship without d2t/t2d; a reduced one may not
    with pytest.raises(SvbenchError, match="needs d2t"):
        write_official_eagle3(tmp_path / "no_maps", head, with_vocab_maps=False)
        load_eagle3(tmp_path / "no_maps", target)


def test_eagle3_head_cache_stays_in_step_with_the_target(target, nets, monkeypatch):
    """Over many rounds (off-spine paths included) the head's cache holds exactly the verified positions the
    target's cache holds, and the target hands the head its three layers' states (3d wide)."""
    drafter = Eagle3Drafter(nets["eagle3"], top_k=4, depth=4, total_token=16)
    seen, original = [], TargetRunner.keep_path

    def spy(self, tree, path):
        original(self, tree, path)
        pending = 0 if drafter.pending is None else len(drafter.pending)  # a round that drafted nothing keeps them
        seen.append((self.cached_len, drafter.fed + pending, drafter.cache.layers[0].get_seq_length() + pending,
                     tuple(self.new_features.shape), off_spine(path)))

    # svip alone may keep every round on the spine where the few-second training lands differently (session
    # 30's Zen 5 EPYC); fixed 4-level rounds on more prompts make sibling paths likely on any CPU
    runs = [(prompt_for(2) * 3, SVIPPolicy()), (prompt_for(2) * 3, FixedPolicy(4))]
    runs += [(prompt_for(seed), FixedPolicy(4)) for seed in range(6)]
    monkeypatch.setattr(TargetRunner, "keep_path", spy)
    outs = [generate(target, prompt, 80, drafter, policy) for prompt, policy in runs]
    monkeypatch.undo()  # the AR references below run unspied
    assert len(seen) > 10
    assert all(out.ids == generate(target, prompt, 80).ids for out, (prompt, _) in zip(outs, runs))
    d = target.config.hidden_size
    for cached, fed, head_cache, (new, width), _ in seen:
        assert head_cache == fed  # the tree's nodes were dropped from the head's cache
        assert fed + new == cached and width == 3 * d  # fed + not yet fed: exactly the target's positions
    assert any(left_spine for *_, left_spine in seen)


def test_official_eagle3_head_for_another_target_is_refused(target, nets, tmp_path):
    from svbench.nets.eagle3 import load_eagle3

    write_official_eagle3(tmp_path / "h", nets["eagle3"])
    config = json.loads((tmp_path / "h" / "config.json").read_text())
    (tmp_path / "h" / "config.json").write_text(json.dumps({**config, "hidden_size": 128}))
    with pytest.raises(SvbenchError, match="does not fit this target"):
        load_eagle3(tmp_path / "h", target)
    with pytest.raises(SvbenchError, match="not an EAGLE-3 head folder"):
        load_eagle3(tmp_path, target)


@pytest.mark.parametrize("method", ["eagle2", "eagle2_wide", "eagle3"])
def test_eagle_drafting_syncs_once_per_level_plus_two(target, nets, method):
    """Tree expansion and rerank run on the device: a round's drafting reads the host once per level (the
    policy's entropy and q) plus twice (the catch-up tokens in, the kept tree out)."""
    from svbench.sync_count import count_syncs

    drafter, per_round, original = METHODS[method](nets), [], EagleDrafter.get_candidates

    def counted(self, ids, policy, max_len, sampling, generator=None):
        with count_syncs() as counts:
            tree = original(self, ids, policy, max_len, sampling, generator)
        per_round.append((sum(counts.values()), tree.steps))
        return tree

    EagleDrafter.get_candidates = counted
    try:
        out = generate(target, prompt_for(6), 40, drafter, SVIPPolicy(h=0.9, c=0.2))
    finally:
        EagleDrafter.get_candidates = original
    assert out.ids == generate(target, prompt_for(6), 40).ids
    assert len(per_round) > 3 and any(steps > 1 for _, steps in per_round)
    # (a round the budget leaves no draft step drafts nothing and reads nothing)
    assert all(syncs == (steps + 2 if steps else 0) for syncs, steps in per_round), per_round


class StepwiseFixed(FixedPolicy):
    """FixedPolicy's stops, but declared to read the draft distribution: drafters ask it after every step."""
    needs_draft_distribution = True


def drafter_for(method, target, nets):
    """METHODS, plus vanilla SD with a noisy copy of the target as its draft (and with a drafting subset)."""
    if method.startswith("vanilla_sd"):  # the full vocabulary, or a drafting subset (the shipped draft LM has one)
        from conftest import noisy_copy
        subset = list(range(0, 512, 2)) + [1, 3, 5] if method == "vanilla_sd_subset" else None
        return DraftModelDrafter(noisy_copy(target, 0.05), None if subset is None else sorted(subset))
    return METHODS[method](nets)


@pytest.mark.parametrize("method", ["vanilla_sd", "vanilla_sd_subset", "glide", "glide_cape", "glide2_reencode",
                                    "eagle2", "eagle3"])
def test_a_length_known_up_front_reads_the_host_once_per_round(target, nets, method):
    """Fixed and heuristic policies know a round's length before drafting (planned_steps): the drafter then
    syncs twice per round whatever the length (the catch-up tokens in, the draft out), and drafts the very
    trees (tokens, parents, steps, entropies) that it drafts when the same stops are asked after every step."""
    from svbench.sync_count import count_syncs

    assert FixedPolicy(4).planned_steps(40) == 4 and FixedPolicy(4).planned_steps(3) == 3
    assert StepwiseFixed(4).planned_steps(40) is None and SVIPPolicy().planned_steps(40) is None
    runs = []
    for policy in (FixedPolicy(4), StepwiseFixed(4)):
        drafter, rounds = drafter_for(method, target, nets), []
        original = drafter.get_candidates

        def counted(*args, **kwargs):
            with count_syncs() as counts:
                tree = original(*args, **kwargs)
            rounds.append((sum(counts.values()), tree))
            return tree

        drafter.get_candidates = counted
        runs.append((generate(target, prompt_for(6), 40, drafter, policy).ids, rounds))
    (planned_ids, planned), (stepwise_ids, stepwise) = runs
    assert planned_ids == stepwise_ids == generate(target, prompt_for(6), 40).ids
    assert len(planned) == len(stepwise) > 3 and any(tree.steps == 4 for _, tree in planned)
    for (syncs, tree), (stepwise_syncs, stepwise_tree) in zip(planned, stepwise):
        assert (tree.tokens, tree.parents, tree.steps) == (stepwise_tree.tokens, stepwise_tree.parents,
                                                           stepwise_tree.steps)
        assert tree.draft_entropy == pytest.approx(stepwise_tree.draft_entropy, abs=1e-6)
        if tree.steps:  # (a round the budget leaves no draft step drafts nothing and reads nothing)
            assert syncs == 2 and stepwise_syncs >= tree.steps + 1, (syncs, stepwise_syncs, tree.steps)
        else:
            assert syncs == stepwise_syncs == 0


@pytest.mark.parametrize("temperature", [0.0, 0.5])  # at T = 1 the tiny nets accept ~0-3 tokens per 40
@pytest.mark.parametrize("method", sorted(METHODS) + ["vanilla_sd", "vanilla_sd_subset"])
def test_a_round_syncs_at_most_once_per_draft_step_plus_three(target, nets, method, temperature):
    """Issue 13's budget over whole generations, target side included (forward, verify, cache compaction):
    host-device syncs <= draft steps + 3 per round (the prefill's round counts as a round with 0 steps).
    Greedy and sampled verification alike; the trained test drafts make rounds accept several tokens and
    leave the first-child chain, so the compaction and the multi-level verifier are exercised."""
    from svbench.decoding.drafters.draft_model import DraftModelDrafter
    from svbench.sync_count import count_syncs

    drafter = drafter_for(method, target, nets)
    sampling, syncs, budget, accepted = Sampling(temperature), 0, 0, 0
    for seed in range(3):
        generator = torch.Generator().manual_seed(seed)
        with count_syncs() as counts:
            out = generate(target, prompt_for(seed), 40, drafter, FixedPolicy(4), sampling, generator=generator)
        syncs += sum(counts.values())
        budget += sum(r.steps for r in out.rounds) + 3 * len(out.rounds)
        accepted += sum(r.accepted for r in out.rounds)
    assert accepted > 0
    assert syncs <= budget, (syncs, budget, dict(counts))
