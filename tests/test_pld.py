"""Prompt-lookup decoding: the lookup against a brute-force search, greedy ids identical to AR, the
sampling law, the policies it accepts and refuses, and that it is wired by one drafter file + one conf."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from svbench.config import validate
from svbench.decoding.drafters.pld import PromptLookupDrafter
from svbench.decoding.loop import generate
from svbench.decoding.policies import FixedPolicy, HeuristicPolicy
from svbench.decoding.verify import Sampling
from svbench.errors import SvbenchError
from svbench.models import tiny_llama
from test_sampling import exact_joint, pooled_pvalue, sampled_counts, small_llama

REPO = Path(__file__).resolve().parents[1]


def brute_force(ids, limit, sizes, latest=True):
    """The continuation of the latest (or first) earlier occurrence of ids' last n tokens, largest n first."""
    for n in sizes:
        if len(ids) < n:
            continue
        key = ids[-n:]
        starts = [j for j in range(len(ids) - n) if ids[j: j + n] == key]  # occurrences ending before the last token
        if starts:
            j = max(starts) if latest else min(starts)
            period = len(ids) - (j + n)  # the n-gram recurs at this distance: the text repeats with this period
            return [ids[j + n + (i % period)] for i in range(limit)]
    return []


@settings(max_examples=300, deadline=None)
@given(seq=st.lists(st.integers(0, 4), min_size=1, max_size=60), cuts=st.lists(st.integers(1, 60), max_size=6),
       max_ngram=st.integers(1, 4), limit=st.integers(1, 8), match=st.sampled_from(["latest", "first"]))
def test_lookup_equals_brute_force_as_the_context_grows(seq, cuts, max_ngram, limit, match):
    drafter = PromptLookupDrafter(max_ngram=max_ngram, min_ngram=1, num_tokens=limit, match=match)
    sizes = list(range(max_ngram, 0, -1))
    for end in sorted({min(c, len(seq)) for c in cuts} | {len(seq)}):  # the index is built incrementally
        assert drafter.lookup(seq[:end], limit) == brute_force(seq[:end], limit, sizes, match == "latest")


def test_lookup_examples():
    d = PromptLookupDrafter(max_ngram=2, num_tokens=3)
    assert d.lookup([7, 1, 2, 9, 9, 1, 2, 5, 1, 2], 3) == [5, 1, 2]  # latest "1 2" wins, not the first
    d = PromptLookupDrafter(max_ngram=2, num_tokens=3, match="first")
    assert d.lookup([7, 1, 2, 9, 9, 1, 2, 5, 1, 2], 3) == [9, 9, 1]
    assert d.lookup([7, 1, 2, 9, 9, 1, 2, 5, 1, 2], 12) == [9, 9, 1, 2, 5, 1, 2, 9, 9, 1, 2, 5]
    d = PromptLookupDrafter(max_ngram=3, num_tokens=4)
    assert d.lookup([1, 2, 3, 4], 4) == []  # nothing repeats
    assert PromptLookupDrafter(max_ngram=2).lookup([4, 6, 8, 6], 5) == [8, 6, 8, 6, 8]  # a 1-gram; 8 6 repeats
    repeating = [9, 8] + [1, 2] * 6  # the latest "1 2" is followed by "1 2" only: the repeat goes on
    assert PromptLookupDrafter(num_tokens=10).lookup(repeating, 10) == [1, 2] * 5


@pytest.fixture(scope="module")
def target():
    return tiny_llama(seed=0)


REPEATING = [10, 20, 30, 40, 50, 10, 20, 30, 40, 50, 10, 20, 30, 60, 70, 10, 20]  # copies to find
DISTINCT = list(range(100, 117))  # no repeats in the prompt


@pytest.mark.parametrize("prompt", [REPEATING, DISTINCT], ids=["repeats", "distinct"])
@pytest.mark.parametrize("policy", [lambda: FixedPolicy(4), lambda: FixedPolicy(10), lambda: HeuristicPolicy()])
def test_greedy_output_is_the_ar_output(target, prompt, policy):
    ar = generate(target, prompt, 48, eos_ids=())
    out = generate(target, prompt, 48, PromptLookupDrafter(), policy(), eos_ids=())
    assert out.ids == ar.ids
    assert sum(r.accepted + 1 for r in out.rounds) == 48
    assert all(r.drafted == r.steps <= 10 for r in out.rounds)


def test_a_target_that_repeats_itself_accepts_the_copied_drafts():
    """A bigram target (attention outputs zeroed: the next token is a function of the current one) loops,
    so once a token recurs the 1-gram lookup predicts the continuation exactly: nearly every draft token is
    accepted, and the output is still AR's."""
    bigram = tiny_llama(seed=3)
    with torch.no_grad():
        for layer in bigram.model.layers:
            layer.self_attn.o_proj.weight.zero_()
    ar = generate(bigram, DISTINCT, 120, eos_ids=())
    assert len(set(ar.ids)) < 60  # it cycles
    out = generate(bigram, DISTINCT, 120, PromptLookupDrafter(), FixedPolicy(8), eos_ids=())
    assert out.ids == ar.ids
    drafted, accepted = sum(r.drafted for r in out.rounds), sum(r.accepted for r in out.rounds)
    assert accepted > 0.9 * drafted and accepted > 60  # most of the answer came from copied drafts
    assert len(out.rounds) < 0.4 * len(ar.rounds)


def test_sampling_law_is_the_targets():
    target = small_llama(5, 2)
    prompt = [4, 0, 4, 1, 4, 3, 1, 5]  # found by search: ~2/3 of the drafted tokens are accepted, 1/3 rejected
    sampling = Sampling(temperature=1.0)
    counts = sampled_counts(target, PromptLookupDrafter(max_ngram=2, num_tokens=3), FixedPolicy(3), sampling,
                            n=1500, prompt=prompt)
    assert pooled_pvalue(counts, exact_joint(target, sampling, prompt)) > 1e-3
    # the draft is exercised: on 30 seeds some drafted tokens are accepted and some rejected
    rounds = [r for seed in range(30) for r in generate(target, prompt, 3, PromptLookupDrafter(max_ngram=2), FixedPolicy(3),
                                                        sampling, generator=torch.Generator().manual_seed(seed)).rounds]
    accepted, drafted = sum(r.accepted for r in rounds), sum(r.drafted for r in rounds)
    assert 0.3 * drafted < accepted < 0.95 * drafted
    assert np.isclose(counts.sum(), 1500)


def test_policies_that_need_a_draft_distribution_are_refused():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        for policy in ("svip", "confidence"):
            with pytest.raises(SvbenchError, match=f"policy={policy} needs a draft distribution"):
                validate(compose(config_name="config", overrides=["method=pld", f"policy={policy}", "pair=tiny"]))
        for policy in ("fixed", "heuristic"):
            c = validate(compose(config_name="config", overrides=["method=pld", f"policy={policy}", "pair=tiny"]))
            assert c["method"]["name"] == "pld"
        fixed = validate(compose(config_name="config", overrides=["method=pld", "policy=fixed", "pair=tiny"]))
        assert fixed["policy"]["gamma"] == 10  # method.fixed_gamma


@pytest.mark.parametrize("kwargs, key", [({"max_ngram": 0}, "max_ngram"), ({"min_ngram": 4, "max_ngram": 3}, "min_ngram"),
                                         ({"match": "best"}, "match"), ({"num_tokens": 2.5}, "num_tokens")])
def test_bad_parameters_are_one_clear_error(kwargs, key):
    with pytest.raises(SvbenchError, match=f"method.drafter.{key}"):
        PromptLookupDrafter(**kwargs)


def test_pld_is_one_drafter_file_and_one_conf():
    """The registry's test: nothing in svbench/ outside the drafter file names the method."""
    hits = subprocess.run(["git", "grep", "-I", "-l", "-i", "-e", "pld", "-e", "prompt.lookup", "--", "svbench/"],
                          cwd=REPO, capture_output=True, text=True).stdout.split()
    assert hits in ([], ["svbench/decoding/drafters/pld.py"]), hits
    assert (REPO / "conf" / "method" / "pld.yaml").is_file()


@pytest.mark.slow
def test_cli_runs_pld(tmp_path):
    out = subprocess.run([sys.executable, "-m", "svbench", "method=pld", "policy=heuristic", "pair=tiny",
                          "max_new_tokens=12", f"hydra.run.dir={tmp_path}"], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "pld / heuristic" in out.stdout and "0 mismatch" in out.stdout
