"""Length policies inside the decoding loop, with scripted drafters whose entropies, probabilities and
acceptances are known in advance: per-round drafted / accepted / steps and the policy's state, which
losslessness cannot see. One unit everywhere: a step is a token for a chain, a level for a tree."""
import pytest
import torch

from svbench.decoding.loop import generate
from svbench.decoding.policies import ArFallback, ConfidencePolicy, FixedPolicy, HeuristicPolicy, SVIPPolicy
from svbench.decoding.tree import DraftTree
from svbench.models import tiny_llama

PROMPT = [5, 17, 42, 99, 3, 250, 11]
MAX_NEW = 60


@pytest.fixture(scope="module")
def target():
    return tiny_llama(seed=0)


@pytest.fixture(scope="module")
def truth(target):
    """AR's greedy continuation: a scripted draft token is right when it equals this."""
    return generate(target, PROMPT, MAX_NEW, eos_ids=()).ids


class ScriptedChain:
    """Round r drafts truth for its first correct[r] tokens, then a wrong token; step i of round r reports
    entropy entropies[r][i] and probability probs[r][i] (last value repeated) to the policy."""
    network, draft_distribution = None, True

    def __init__(self, truth, correct, entropies=None, probs=None):
        self.truth, self.correct, self.entropies, self.probs = truth, correct, entropies, probs
        self.asked: list[list[int]] = []  # per round: the drafted_len of every should_stop call

    def reset(self, target=None):
        self.round = 0

    @staticmethod
    def _at(table, r, i, default):
        if table is None:
            return default
        row = table[min(r, len(table) - 1)]
        return row[min(i, len(row) - 1)]

    def get_candidates(self, ids, policy, max_len, sampling, generator=None):
        r, pos = self.round, len(ids) - len(PROMPT)  # truth[pos] is the token after the root
        drafted, entropies, asked = [], [], []
        for i in range(max_len):
            right = self.truth[pos + i] if pos + i < len(self.truth) else 0
            drafted.append(right if i < self._at([self.correct], 0, r, 0) else (right + 1) % 512)
            entropies.append(self._at(self.entropies, r, i, 0.0))
            asked.append(i + 1)
            if policy.should_stop(i + 1, self._at(self.probs, r, i, 1.0), entropies[-1]):
                break
        self.asked.append(asked)
        self.round += 1
        return DraftTree.chain(ids[-1], drafted, None, entropies)

    def update_candidate_strategy(self, tree, accepted_path):
        pass


class ScriptedTree(ScriptedChain):
    """Each level holds two nodes under the previous level's first node: the right token (first) and a wrong
    one; the right chain is cut after correct[r] levels (both nodes wrong below that)."""

    def get_candidates(self, ids, policy, max_len, sampling, generator=None):
        r, pos = self.round, len(ids) - len(PROMPT)
        tokens, parents, entropies, asked, previous = [ids[-1]], [-1], [], [], 0
        for level in range(max_len):
            right = self.truth[pos + level] if pos + level < len(self.truth) else 0
            first = right if level < self._at([self.correct], 0, r, 0) else (right + 1) % 512
            tokens += [first, (right + 2) % 512]
            parents += [previous, previous]
            previous = len(tokens) - 2
            entropies.append(self._at(self.entropies, r, level, 0.0))
            asked.append(level + 1)
            if policy.should_stop(level + 1, 1.0, entropies[-1]):
                break
        self.asked.append(asked)
        self.round += 1
        return DraftTree.from_parents(tokens, parents, entropies, steps=len(entropies))


def rounds_of(out):
    """(drafted, accepted, steps) per drafting round (round 0 is the prefill's)."""
    return [(r.drafted, r.accepted, r.steps) for r in out.rounds[1:]]


def test_svip_stops_at_the_first_step_where_sqrt_cH_exceeds_h(target, truth):
    # c=0.15, h=0.3: stop when H > 0.6. Round 0 steps: 0.1, 0.5, 0.61 -> 3 tokens; round 1: 0.9 -> 1 token
    drafter = ScriptedChain(truth, correct=[10, 10, 10], entropies=[[0.1, 0.5, 0.61, 0.0], [0.9], [0.0, 0.0, 2.0]])
    out = generate(target, PROMPT, 12, drafter, SVIPPolicy(c=0.15, h=0.3))
    assert out.ids == truth[:12]
    assert rounds_of(out)[:3] == [(3, 3, 3), (1, 1, 1), (3, 3, 3)]
    assert out.rounds[1].draft_entropy == [0.1, 0.5, 0.61]
    assert drafter.asked[:3] == [[1, 2, 3], [1], [1, 2, 3]]  # asked after every token


def test_svip_max_len_caps_a_round_that_never_gets_uncertain(target, truth):
    drafter = ScriptedChain(truth, correct=[50])
    out = generate(target, PROMPT, 30, drafter, SVIPPolicy(max_len=7))
    assert rounds_of(out)[0] == (7, 7, 7)


@pytest.mark.parametrize("tree", [False, True])
def test_heuristic_grows_after_a_fully_accepted_round_and_shrinks_after_a_rejection(target, truth, tree):
    """initial 3, +2 / -1: round 0 fully accepted (3 of 3) -> 5; round 1 accepts 2 of 5 -> 4; round 2 accepts
    0 of 4 -> 3. Trees count levels: a tree of 3 levels (6 nodes) fully accepted to depth 3 must grow too."""
    cls = ScriptedTree if tree else ScriptedChain
    drafter = cls(truth, correct=[3, 2, 0, 10])
    policy = HeuristicPolicy(initial=3, increase=2, decrease=1, min_len=1, max_len=40)
    out = generate(target, PROMPT, 40, drafter, policy)
    assert out.ids == truth[:40]
    steps = [s for _, _, s in rounds_of(out)]
    accepted = [a for _, a, _ in rounds_of(out)]
    assert steps[:4] == [3, 5, 4, 3]
    assert accepted[:3] == [3, 2, 0]
    drafted = [d for d, _, _ in rounds_of(out)]
    assert drafted[:4] == ([6, 10, 8, 6] if tree else [3, 5, 4, 3])  # nodes: two per level for the tree


def test_confidence_stops_once_the_drafted_token_probability_falls_below_the_threshold(target, truth):
    drafter = ScriptedChain(truth, correct=[10], probs=[[0.9, 0.8, 0.39, 0.99], [0.2]])
    out = generate(target, PROMPT, 10, drafter, ConfidencePolicy(threshold=0.4))
    assert [d for d, _, _ in rounds_of(out)][:2] == [3, 1]  # the low-confidence token is still drafted


def test_fixed_drafts_gamma_steps_and_a_rejection_is_counted(target, truth):
    drafter = ScriptedChain(truth, correct=[4, 1, 0])
    out = generate(target, PROMPT, 20, drafter, FixedPolicy(4))
    assert rounds_of(out)[:3] == [(4, 4, 4), (4, 1, 4), (4, 0, 4)]
    assert [r.accepted + 1 for r in out.rounds] == [1] + [a + 1 for _, a, _ in rounds_of(out)]
    assert sum(r.accepted + 1 for r in out.rounds) == len(out.ids) == 20


def test_policy_update_sees_steps_not_nodes(target, truth):
    """The unit bug: on a tree the loop passed nodes to update() while should_stop counted levels."""
    seen = []

    class Spy(FixedPolicy):
        def update(self, drafted_len, accepted_len):
            seen.append((drafted_len, accepted_len))

    out = generate(target, PROMPT, 12, ScriptedTree(truth, correct=[2, 3, 3]), Spy(3))
    assert seen[:2] == [(3, 2), (3, 3)]
    assert rounds_of(out)[:2] == [(6, 2, 3), (6, 3, 3)]
    torch.testing.assert_close(torch.tensor(out.ids), torch.tensor(truth[:12]))


def test_ar_fallback_pauses_probes_and_doubles_its_pause_from_measured_costs():
    f = ArFallback(alpha=0.5, pause=2, max_pause=8)
    assert f.draft_now()
    f.update(True, 3, 0.030, 0.012)  # 10 ms per token < 12 ms (no target-only round yet: the verify time)
    assert f.draft_now()
    f.update(True, 1, 0.020, 0.012)  # EMAs 25 ms / 2 tokens = 12.5 ms >= 12: pause 2 rounds
    for seconds in (0.010, 0.011):
        assert not f.draft_now()
        f.update(False, 1, seconds, seconds)  # target-only rounds: t_ar = EMA 10.5 ms
    assert f.draft_now()
    f.update(True, 1, 0.022, 0.011)  # EMAs 23.5 ms / 1.5 = 15.7 ms >= 10.5: still not paying, the pause doubles
    assert f.pause == 4
    assert [f.draft_now() for _ in range(4)] == [False] * 4
    for _ in range(4):
        f.update(False, 1, 0.010, 0.010)  # t_ar -> ~10 ms
    assert f.draft_now()
    f.update(True, 6, 0.025, 0.011)  # EMAs 24.25 ms / 3.75 = 6.5 ms < 10: drafting goes on, the pause resets
    assert f.draft_now() and f.pause == 2
    f.update(True, 3, 0.027, 0.011)  # EMAs 25.6 ms / 3.4 = 7.5 ms: still pays
    assert f.draft_now()
    f.update(True, 1, 0.060, 0.011)  # 42.8 ms / 2.2 = 19.5 ms: pause (not after a pause: not doubled)
    assert f.pause == 2 and [f.draft_now() for _ in range(3)] == [False, False, True]
    for expected in (4, 8, 8):  # drafting rounds right after a pause that still do not pay double it, capped
        f.update(True, 1, 0.060, 0.011)
        assert f.pause == expected
        assert [f.draft_now() for _ in range(expected + 1)] == [False] * expected + [True]
    f.reset()
    assert f.draft_now() and f.ar_s is None and f.pause == 2
    slow = ArFallback(alpha=0.25)
    for _ in range(3):  # no decision before 1/alpha = 4 drafting rounds
        slow.update(True, 1, 0.050, 0.011)
        assert slow.draft_now()
    slow.update(True, 1, 0.050, 0.011)
    assert not slow.draft_now()


def test_ar_fallback_in_the_loop_target_only_rounds_then_a_probe(target, truth):
    """A draft that is always wrong: the first drafting round costs more per token than its own verify,
    so the next `pause` rounds draft nothing (drafted 0, steps 0), then one round probes."""
    policy = FixedPolicy(3)
    policy.ar_fallback = ArFallback(alpha=1.0, pause=5)  # alpha 1: decides from the first round on
    drafter = ScriptedChain(truth, correct=[0])
    out = generate(target, PROMPT, 30, drafter, policy)
    assert out.ids == truth[:30]
    assert rounds_of(out)[:7] == [(3, 0, 3)] + [(0, 0, 0)] * 5 + [(3, 0, 3)]
    assert drafter.asked[:7] == [[1, 2, 3]] + [[]] * 5 + [[1, 2, 3]]


def test_ar_fallback_keeps_drafting_while_it_pays(target, truth):
    policy = FixedPolicy(4)
    policy.ar_fallback = ArFallback()
    out = generate(target, PROMPT, 40, ScriptedChain(truth, correct=[100]), policy)
    assert out.ids == truth[:40]
    assert all(d == 4 for d, _, _ in rounds_of(out)[:-1])  # (the last round is cut by the budget)
