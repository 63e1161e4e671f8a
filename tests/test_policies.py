import math

import pytest

from svbench.decoding.policies import ConfidencePolicy, FixedPolicy, HeuristicPolicy, SVIPPolicy
from svbench.errors import SvbenchError


def test_svip_stops_exactly_when_sqrt_cH_exceeds_h():
    policy = SVIPPolicy(c=0.15, h=0.3)  # threshold H* = h^2 / c = 0.6 nats
    threshold = 0.3**2 / 0.15
    assert not policy.should_stop(1, 0.9, threshold - 1e-9)
    assert policy.should_stop(1, 0.9, threshold + 1e-9)
    for entropy in [0.0, 0.1, 0.59, 0.61, 1.0, 5.0]:
        assert policy.should_stop(3, 0.5, entropy) == (math.sqrt(0.15 * entropy) > 0.3)
    # no minimum length: the very first token may stop the round
    assert policy.should_stop(1, 0.5, 2.0)
    assert SVIPPolicy().max_len == 40


def test_heuristic_schedule_is_transformers():
    policy = HeuristicPolicy()
    assert policy.current == 5
    assert not policy.should_stop(4, 0.1, 9.0) and policy.should_stop(5, 0.9, 0.0)
    policy.update(5, 5)
    assert policy.current == 7  # all accepted: +2
    policy.update(7, 3)
    assert policy.current == 6  # else -1
    for _ in range(20):
        policy.update(policy.current, 0)
    assert policy.current == 1  # floor
    for _ in range(30):
        policy.update(policy.current, policy.current)
    assert policy.current == 40  # cap
    policy.reset()
    assert policy.current == 5


def test_confidence_threshold_and_fixed():
    policy = ConfidencePolicy(threshold=0.4)
    assert policy.should_stop(1, 0.39, 0.0) and not policy.should_stop(1, 0.41, 9.0)
    fixed = FixedPolicy(gamma=3)
    assert [fixed.should_stop(k, 0.0, 9.0) for k in (1, 2, 3)] == [False, False, True]


@pytest.mark.parametrize("make", [
    lambda: FixedPolicy(gamma=0), lambda: FixedPolicy(gamma=2.5), lambda: SVIPPolicy(h=0),
    lambda: SVIPPolicy(h=1.5), lambda: SVIPPolicy(c=-1), lambda: ConfidencePolicy(threshold=1.2),
    lambda: HeuristicPolicy(initial=50), lambda: HeuristicPolicy(min_len=0), lambda: SVIPPolicy(max_len=0),
    lambda: SVIPPolicy(c="x"),
])
def test_out_of_range_parameters_are_refused(make):
    with pytest.raises(SvbenchError, match="policy\\."):
        make()
