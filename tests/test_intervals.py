"""95% intervals of speedup and tau (svbench.results.bootstrap_ci) and paired comparisons
(svbench.analysis.metrics.compare): coverage on simulated data, reproducibility, repeated runs as clusters,
verdicts. Synthetic records only; every generator seeded."""
import numpy as np
import pytest
from scipy import stats

from svbench.analysis.metrics import compare
from svbench.results import bootstrap_ci, ratio_of_means, summarize, summarize_group


def make_records(speeds, ar_speeds, accepted=None, runs=None, questions=None):
    """One record per entry: new_tokens 100 at the given speed, its AR baseline at ar_speed; rounds from
    accepted (a list of accepted counts per round) or one round."""
    out = []
    for i, (speed, ar_speed) in enumerate(zip(speeds, ar_speeds)):
        acc = [0] if accepted is None else list(accepted[i])
        out.append({"method": "vanilla_sd", "policy": "fixed", "question_id": i if questions is None else questions[i],
                    "turn": 0, "run": 0 if runs is None else runs[i], "category": "c", "new_tokens": 100,
                    "wall_time": 100 / speed, "ar_new_tokens": 100, "ar_wall_time": 100 / ar_speed,
                    "rounds": {"drafted": [a + 1 for a in acc], "accepted": acc}})
    return out


def simulated(rng, n):
    """n question-turns: AR speed lognormal around 20 tok/s, the method's speed = AR speed x a per-question
    speedup factor (lognormal, mean TRUE_SPEEDUP) x timing noise; rounds with geometric accepted counts
    (P(accept) = 0.6, up to 5 drafted: true tau = E[min(G, 5)] + 1)."""
    ar = rng.lognormal(np.log(20), 0.3, n)
    speed = ar * rng.lognormal(np.log(1.2) - 0.25 ** 2 / 2, 0.25, n)
    rounds = rng.integers(20, 60, n)
    accepted = [np.minimum(rng.geometric(0.4, k) - 1, 5) for k in rounds]
    return make_records(speed, ar, accepted)


TRUE_SPEEDUP = 1.2  # E[factor]; the factor is independent of the AR speed, so E[speed] / E[AR speed] = 1.2
TRUE_TAU = 1 + sum(0.6 ** k for k in range(1, 6))  # E[min(G, 5)] + 1, G ~ failures before the first rejection


def test_coverage_on_simulated_data():
    """200 simulated data sets of 30 question-turns: the 95% intervals of speedup and of tau cover the truth
    at about the stated rate."""
    rng = np.random.default_rng(2024)
    hits = np.zeros(2)
    for _ in range(200):
        s = summarize_group(simulated(rng, 30))
        hits += [s["speedup_ci"][0] <= TRUE_SPEEDUP <= s["speedup_ci"][1], s["tau_ci"][0] <= TRUE_TAU <= s["tau_ci"][1]]
    coverage = hits / 200
    assert ((0.88 <= coverage) & (coverage <= 0.99)).all(), coverage


def test_matches_scipy_bca_for_one_run():
    """One record per question-turn: the same BCa interval as scipy.stats.bootstrap (paired), up to resampling
    noise."""
    rng = np.random.default_rng(7)
    x, y = rng.lognormal(3, 0.5, 30), rng.lognormal(2.8, 0.3, 30)
    ours = bootstrap_ci(np.column_stack([x, y]), ratio_of_means, resamples=20000)
    ref = stats.bootstrap((x, y), lambda a, b, axis: a.mean(axis) / b.mean(axis), paired=True, vectorized=True,
                          n_resamples=20000, method="BCa", random_state=0).confidence_interval
    assert ours == pytest.approx([ref.low, ref.high], abs=0.01)


def test_reproducible_and_independent_of_record_order():
    records = simulated(np.random.default_rng(1), 30)
    first = summarize(records)["overall"]
    again = summarize(records)["overall"]
    shuffled = summarize([records[i] for i in np.random.default_rng(2).permutation(30)])["overall"]
    assert first["speedup_ci"] == again["speedup_ci"] == shuffled["speedup_ci"]
    assert first["tau_ci"] == again["tau_ci"] == shuffled["tau_ci"]
    lo, hi = first["speedup_ci"]
    assert lo < first["speedup"] < hi


def test_repeated_runs_are_clusters_not_questions():
    """3 identical runs of each of 10 questions: the interval equals the one-run interval (the runs add no
    information about other questions); taken as 30 independent questions it would shrink by about sqrt(3)."""
    rng = np.random.default_rng(3)
    speed, ar = rng.lognormal(3.2, 0.3, 10), rng.lognormal(3.0, 0.3, 10)
    one = summarize_group(make_records(speed, ar))["speedup_ci"]
    records = make_records(np.repeat(speed, 3), np.repeat(ar, 3), runs=np.tile([0, 1, 2], 10),
                           questions=np.repeat(np.arange(10), 3))
    three = summarize_group(records)["speedup_ci"]
    assert three[1] - three[0] == pytest.approx(one[1] - one[0], rel=0.1)
    naive = bootstrap_ci(np.column_stack([np.repeat(speed, 3), np.repeat(ar, 3)]), ratio_of_means)
    assert naive[1] - naive[0] < 0.75 * (one[1] - one[0])


def test_runs_with_timing_noise_widen_within_clusters():
    """Runs that differ (timing noise) are resampled within their question-turn: an interval at least as wide
    as that of one run's worth of question-turns, and no sqrt(runs) shrinkage."""
    rng = np.random.default_rng(4)
    speed, ar = rng.lognormal(3.2, 0.3, 20), rng.lognormal(3.0, 0.3, 20)
    noisy = np.repeat(speed, 3) * rng.lognormal(0, 0.05, 60)
    records = make_records(noisy, np.repeat(ar, 3), runs=np.tile([0, 1, 2], 20), questions=np.repeat(np.arange(20), 3))
    clustered = summarize_group(records)["speedup_ci"]
    naive = bootstrap_ci(np.column_stack([noisy, np.repeat(ar, 3)]), ratio_of_means)
    assert clustered[1] - clustered[0] > 1.4 * (naive[1] - naive[0])


def test_no_interval_for_one_question_turn():
    one = summarize_group(make_records([30.0], [20.0]))
    assert one["speedup"] == pytest.approx(1.5) and one["speedup_ci"] is None and one["tau_ci"] is None
    runs = make_records([30.0, 31.0], [20.0, 20.0], runs=[0, 1], questions=[5, 5])  # one question, two runs
    assert summarize_group(runs)["speedup_ci"] is None


def with_noise(records, rng, factor=1.0, sd=0.05):
    """Copies of records as another configuration: the method's time divided by factor, times timing noise."""
    out = []
    for r in records:
        r = {**r, "policy": "svip"}
        r["wall_time"] = r["wall_time"] / factor * rng.lognormal(0, sd)
        out.append(r)
    return out


def test_comparison_verdicts():
    rng = np.random.default_rng(5)
    a = simulated(rng, 30)
    same = compare(a, a)
    assert same["speedup_diff"] == 0 and same["speedup_diff_ci"] == [0.0, 0.0]
    assert same["speedup_verdict"] == same["tau_verdict"] == "within noise"
    alike = compare(a, with_noise(a, rng))  # the same configuration run again: timing noise only
    assert alike["n"] == 30 and alike["speedup_verdict"] == "within noise"
    faster = compare(a, with_noise(a, rng, factor=1.1))  # 10% faster on every question-turn
    assert faster["speedup_verdict"] == "resolved"
    assert faster["speedup_diff_ci"][0] > 0 and faster["speedup_diff"] == pytest.approx(
        faster["speedup_b"] - faster["speedup_a"])


def test_comparison_pairs_by_question_turn_and_run():
    """Only the (question_id, turn, run) both have count; a unit's a and b stay together (a shuffled b gives
    the same result)."""
    rng = np.random.default_rng(6)
    a = simulated(rng, 30)
    b = with_noise(a, rng, factor=1.05)
    part = compare(a, b[5:])
    assert part["n"] == 25
    assert part["speedup_a"] == pytest.approx(summarize_group(a[5:])["speedup"])
    assert compare(a, b[::-1]) == compare(a, b)
