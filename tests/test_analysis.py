"""svbench.analysis: tables equal summary.json, every output is written, clear errors, Spec-Bench round trip,
the notebook runs. Two real pair=tiny runs (svip, then fixed reusing svip's AR baseline) made once."""
import copy
import json
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import pinned

from svbench.analysis import analyze, export_answers, import_answers, load_records
from svbench.analysis import metrics
from svbench.analysis.__main__ import main
from svbench.errors import SvbenchError
from svbench.results import bootstrap_ci, format_summary, ratio_of_means, read_records, summarize, summarize_group

REPO = Path(__file__).resolve().parents[1]
GROUP_LENGTH = metrics.GROUP_KEY.index("max_new_tokens")
OUTPUTS = {"speedup_by_category.md", "speedup_by_category.tex", "tau_by_category.md", "per_position_acceptance.md",
           "per_position_acceptance.tex", "efficiency.md", "oracle.md", "summary.md", "comparisons.md",
           "draft_length_hist.png", "speedup.png",
           "entropy_vs_acceptance.png", "speedup_vs_length.png", "speedup_by_length.md", "speedup_by_length.tex"}
LENGTH_OUTPUTS = {"speedup_vs_length.png", "speedup_by_length.md", "speedup_by_length.tex"}  # only with 2+ lengths


def svbench_run(run_dir, *overrides):
    cmd = [sys.executable, "-m", "svbench", "pair=tiny", "progress=false", "benchmark.limit=1", "max_new_tokens=16",
           f"hydra.run.dir={run_dir}", *pinned(*overrides), *overrides]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    svbench_run(root / "svip", "policy=svip")
    svbench_run(root / "fixed", "policy=fixed", f"baseline_records=[{root / 'svip' / 'records.jsonl'}]")
    return root


def write_records(path: Path, records) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def variant(records, **changes) -> list[dict]:
    """Copies of records as another configuration (another config_hash) or another repeat."""
    out = []
    for r in records:
        r = copy.deepcopy(r)
        r.update(changes)
        r["config_hash"] = f"{r['config_hash']}-{'-'.join(f'{k}{v}' for k, v in changes.items())}"
        out.append(r)
    return out


# ---- tables equal summary.json -------------------------------------------------------------------------------

def test_tables_equal_summary_json(runs):
    sd = [r for r in load_records([runs]) if r["method"] != "ar"]
    groups = metrics.group(sd)
    table = metrics.speedup_by_category(sd)
    assert len(groups) == len(table) == 2
    for row, rs in zip(table.to_dict("records"), groups.values()):
        saved = json.loads((runs / rs[0]["policy"] / "summary.json").read_text())
        assert rs[0]["config_hash"] == saved["config_hash"]
        expected = saved["summary"]
        for category, metrics_ in expected.items():
            assert row[category] == metrics_["speedup"]
            assert row[f"{category}_ci"] == metrics_["speedup_ci"]  # seeded: the run's own process, the same interval
        assert row["tau"] == expected["overall"]["tau"] and row["tau_ci"] == expected["overall"]["tau_ci"]
        assert (row["method"], row["policy"]) == (saved["method"], saved["policy"])
    for row, rs in zip(metrics.by_category(sd, "tau").to_dict("records"), groups.values()):
        expected = json.loads((runs / rs[0]["policy"] / "summary.json").read_text())["summary"]
        assert len(expected) > 2  # categories besides overall, each with its own tau
        for category, metrics_ in expected.items():
            assert (row[category], row[f"{category}_ci"]) == (metrics_["tau"], metrics_["tau_ci"])
        assert "tau" not in row  # overall tau is the 'overall' column here


def test_markdown_table_shows_summary_numbers(runs, tmp_path):
    analyze([runs], tmp_path)
    text = (tmp_path / "speedup_by_category.md").read_text()
    for policy in ("svip", "fixed"):
        overall = json.loads((runs / policy / "summary.json").read_text())["summary"]["overall"]
        row = next(line for line in text.splitlines() if f"| {policy} |" in line)
        assert f"{overall['speedup']:.3f}" in row and f"{overall['tau']:.3f}" in row
        lo, hi = overall["speedup_ci"]
        assert f"{overall['speedup']:.3f} [{lo:.3f}, {hi:.3f}]" in row
    assert "\\begin{tabular}" in (tmp_path / "speedup_by_category.tex").read_text()


# ---- every output ------------------------------------------------------------------------------------------------

def test_every_output_file_is_written(runs, tmp_path):
    svip = read_records(runs / "svip" / "records.jsonl")
    longer = write_records(tmp_path / "len32" / "records.jsonl", variant(svip, max_new_tokens=32))
    written = analyze([runs, longer], tmp_path / "out")
    assert {p.name for p in written} == OUTPUTS
    for path in written:
        assert path.parent == tmp_path / "out" and path.stat().st_size > 0
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "length" in (tmp_path / "out" / "speedup_by_category.md").read_text()  # lengths differ: a column


def test_length_table_has_a_column_per_length_in_numeric_order(runs):
    svip = [r for r in read_records(runs / "svip" / "records.jsonl") if r["method"] != "ar"]
    lengths = {512: variant(svip, max_new_tokens=512), 2048: variant(svip, max_new_tokens=2048),
               128: variant(svip, max_new_tokens=128)}
    for n, rs in lengths.items():  # distinct speedups per length, so a column mix-up shows
        for r in rs:
            r["wall_time"] *= n / 128
    sd = [r for rs in lengths.values() for r in rs]  # first seen: 512, 2048, 128 (text order of sweep folders)
    assert [k[GROUP_LENGTH] for k in metrics.group(sd)] == [128, 512, 2048]
    table = metrics.speedup_length_table(metrics.speedup_by_length(sd))
    assert list(table.columns) == ["series", "128", "128_ci", "512", "512_ci", "2048", "2048_ci"]
    for n, rs in lengths.items():
        assert table.loc[0, str(n)] == summarize_group(rs)["speedup"]


def test_length_table_keeps_configurations_apart(runs):
    """Two drafter settings of one method/policy: one row each (never averaged); columns numeric even when the
    first configuration lacks the shortest length; rows without a length (imports) are left out."""
    svip = [r for r in read_records(runs / "svip" / "records.jsonl") if r["method"] != "ar"]
    params = {"policy.c": 0.15, "drafter.top_k": 10}
    big = [variant(svip, max_new_tokens=n, config_params=params) for n in (512, 2048)]
    small = [variant(svip, max_new_tokens=n, config_params={**params, "drafter.top_k": 4}) for n in (128, 512)]
    for rs in small:
        for r in rs:
            r["wall_time"] *= 3  # a different speedup, so an average would show
    imported = variant(svip, max_new_tokens=None, temperature=None)
    by_length = metrics.speedup_by_length([r for rs in big + small for r in rs] + imported)
    table = metrics.speedup_length_table(by_length)
    assert [c for c in table.columns if not c.endswith("_ci")][-3:] == ["128", "512", "2048"]
    rows = {row["series"]: row for row in table.to_dict("records")}
    assert set(rows) == {"vanilla_sd / svip (top_k=10)", "vanilla_sd / svip (top_k=4)"}
    assert rows["vanilla_sd / svip (top_k=10)"]["512"] == summarize_group(big[0])["speedup"]
    assert rows["vanilla_sd / svip (top_k=4)"]["512"] == summarize_group(small[1])["speedup"]
    assert rows["vanilla_sd / svip (top_k=4)"]["128"] == summarize_group(small[0])["speedup"]
    assert pd.isna(rows["vanilla_sd / svip (top_k=10)"]["128"])


def test_speedup_vs_length_skipped_with_one_length(runs, tmp_path):
    written = analyze([runs], tmp_path)
    assert {p.name for p in written} == OUTPUTS - LENGTH_OUTPUTS


def test_summary_mean_std_over_runs(runs, tmp_path):
    svip = [r for r in read_records(runs / "svip" / "records.jsonl") if r["method"] != "ar"]
    again = copy.deepcopy(svip)
    for r in again:
        r.update(run=1, wall_time=r["wall_time"] * 1.5)
    frame = metrics.repeats(svip + again)
    speedups = [summarize_group(svip)["speedup"], summarize_group(again)["speedup"]]
    assert frame.loc[0, "runs"] == 2
    assert frame.loc[0, "speedup"] == pytest.approx(statistics.fmean(speedups), abs=1e-12)
    assert frame.loc[0, "speedup_std"] == pytest.approx(statistics.stdev(speedups), abs=1e-12)
    path = write_records(tmp_path / "rep" / "records.jsonl", svip + again)
    analyze([path], tmp_path / "out")
    assert " ± " in (tmp_path / "out" / "summary.md").read_text()


# ---- formulas on hand-made rounds ------------------------------------------------------------------------------

def record(drafted, accepted, draft_s, verify_s, wall_time, new_tokens, entropy=None, **extra):
    r = {"method": "vanilla_sd", "policy": "fixed", "pair": "p", "benchmark": "b", "seed": 0, "temperature": 0.0,
         "max_new_tokens": 16, "question_id": "q", "category": "c", "turn": 0, "run": 0, "config_hash": "h",
         "new_tokens": new_tokens, "wall_time": wall_time, "ar_new_tokens": new_tokens, "ar_wall_time": 1.0,
         "rounds": {"drafted": drafted, "accepted": accepted, "draft_s": draft_s, "verify_s": verify_s},
         "draft_s": sum(draft_s), "verify_s": sum(verify_s),
         "draft_entropy": entropy if entropy is not None else [[0.5] * d for d in drafted]}
    r.update(extra)
    return r


def test_summarize_by_hand():
    """Three records, two categories: every summary number worked out by hand; the intervals are bootstrap_ci
    of each record's (speed, AR speed) and (tokens, rounds), sorted by question_id."""
    rs = [record([0, 3, 3, 3], [0, 2, 3, 3], [0.0] * 4, [0.1] * 4, 1.0, 12, question_id="q1", category="A",
                 ar_new_tokens=12, ar_wall_time=3.0, lossless=True),                      # 12 tok/s vs AR 4
          record([0, 2, 2], [0, 0, 1], [0.0] * 3, [0.1] * 3, 0.5, 4, question_id="q2", category="A",
                 ar_new_tokens=4, ar_wall_time=1.0, lossless=False),                      # 8 vs 4
          record([0, 4], [0, 4], [0.0] * 2, [0.1] * 2, 2.0, 6, question_id="q3", category="B",
                 ar_new_tokens=6, ar_wall_time=2.0, lossless=True)]                       # 3 vs 3
    s = summarize(rs[::-1])  # record order does not matter
    assert list(s) == ["B", "A", "overall"]
    o = s["overall"]
    assert o["n"] == 3 and o["lossless"] == 2
    assert o["tokens_per_s"] == pytest.approx(23 / 3) and o["ar_tokens_per_s"] == pytest.approx(11 / 3)
    assert o["speedup"] == pytest.approx(23 / 11)                     # mean speed / mean AR speed
    assert o["speedup_pooled"] == pytest.approx((22 / 3.5) / (22 / 6))  # total tokens / total time
    assert o["tau"] == pytest.approx(22 / 9)                          # (accepted + 1) over all 9 rounds
    assert o["acceptance_rate"] == pytest.approx(13 / 17) and o["mean_draft_len"] == pytest.approx(17 / 9)
    assert o["speedup_ci"] == bootstrap_ci(np.array([[12, 4], [8, 4], [3, 3]]), ratio_of_means)
    assert o["tau_ci"] == bootstrap_ci(np.array([[12, 4], [4, 3], [6, 2]]), ratio_of_means)
    lo, hi = o["speedup_ci"]
    assert 1.0 <= lo < o["speedup"] < hi <= 3.0  # within the range of the per-record ratios of means
    assert s["A"]["speedup"] == pytest.approx(10 / 4) and s["A"]["tau"] == pytest.approx(16 / 7)
    assert s["A"]["speedup_ci"] == bootstrap_ci(np.array([[12, 4], [8, 4]]), ratio_of_means)
    assert s["B"]["speedup"] == pytest.approx(1.0) and s["B"]["tau"] == pytest.approx(3.0)
    assert s["B"]["speedup_ci"] is None and s["B"]["tau_ci"] is None  # one question-turn: no interval
    assert f"{o['speedup']:.3f} [{lo:.3f}, {hi:.3f}]" in format_summary(s)


def test_position_acceptance_is_conditional():
    r = record([0, 3, 3, 2], [0, 3, 1, 0], [0.0] * 4, [0.1] * 4, 1.0, 7)
    assert metrics.position_acceptance([r], positions=4) == [2 / 3, 1 / 2, 1.0, None]


def test_chain_outcomes_keep_only_tested_tokens():
    """Accepted before the first rejection, rejected at it, never tested (left out) after it."""
    r = record([0, 3, 2, 2], [0, 1, 2, 0], [0.0] * 4, [0.1] * 4, 1.0, 6,
               entropy=[[], [0.1, 0.2, 0.3], [0.4, 0.5], [0.6, 0.7]])
    frame = metrics.chain_token_outcomes([r])
    assert frame["entropy"].tolist() == [0.1, 0.2, 0.4, 0.5, 0.6]
    assert frame["accepted"].tolist() == [True, False, True, True, False]


def synthetic_chains(rng, stop, rounds=10000, per_record=1000):
    """Chain rounds of up to 5 tokens, entropy ~ U(0, 2), token i accepted with probability 0.95 - 0.4 * entropy
    given the tokens before it were; stop(entropies) -> how many tokens the policy drafted."""
    h = rng.uniform(0, 2, (rounds, 5))
    ok = rng.uniform(size=(rounds, 5)) < 0.95 - 0.4 * h
    drafted = stop(h)
    accepted = np.minimum(np.where(ok.all(axis=1), 5, np.argmin(ok, axis=1)), drafted)
    return [record([0, *drafted[k:k + per_record]], [0, *accepted[k:k + per_record]], [0.0] * (per_record + 1),
                   [0.1] * (per_record + 1), 1.0, 1,
                   entropy=[[], *(h[i, :drafted[i]].tolist() for i in range(k, k + per_record))])
            for k in range(0, rounds, per_record)]


def test_entropy_acceptance_curve_does_not_depend_on_the_length_policy():
    """One draft, two policies (fixed 5 tokens; stop after the first token with entropy > 1): the curve of
    P(accept | entropy, tokens before accepted) is the same and equals the truth; counting every token after
    the first rejection as rejected (the old statistic) gives two different curves."""
    rng = np.random.default_rng(0)
    edges = np.linspace(0, 2, 9)
    policies = {"fixed": lambda h: np.full(len(h), 5),
                "entropy": lambda h: np.where((h > 1).any(axis=1), np.argmax(h > 1, axis=1) + 1, 5)}
    new, old = {}, {}
    for name, stop in policies.items():
        records = synthetic_chains(rng, stop)
        new[name] = metrics.acceptance_by_entropy(metrics.chain_token_outcomes(records), edges)
        every = pd.DataFrame([(x, i < a) for r in records for h, a in zip(r["draft_entropy"], r["rounds"]["accepted"])
                              for i, x in enumerate(h)], columns=["entropy", "accepted"])
        old[name] = metrics.acceptance_by_entropy(every, edges)
    truth = 0.95 - 0.4 * new["fixed"]["centre"].to_numpy()
    assert len(new["fixed"]) == len(new["entropy"]) == 8
    assert np.abs(new["fixed"]["mean"].to_numpy() - new["entropy"]["mean"].to_numpy()).max() < 0.04
    assert np.abs(new["fixed"]["mean"].to_numpy() - truth).max() < 0.03
    assert np.abs(old["fixed"]["mean"].to_numpy() - old["entropy"]["mean"].to_numpy()).max() > 0.2


def test_efficiency_and_oracle_formulas():
    r = record([0, 4, 4], [0, 4, 1], [0.0, 0.4, 0.4], [0.5, 0.2, 0.2], 1.9, 8)
    eff = metrics.efficiency([r]).iloc[0]
    c = (0.8 / 8) / 0.2  # draft s per drafted token / verify s per round, after the prefill
    s = summarize_group([r])
    assert eff["c"] == pytest.approx(c) and eff["ideal"] == pytest.approx(s["tau"] / (1 + c * s["mean_draft_len"]))
    assert eff["efficiency"] == pytest.approx(s["speedup"] / eff["ideal"])
    # verify 0.9 s + 5 accepted x 0.1 s per drafted token + 0.2 s outside draft and verify
    assert metrics.oracle_time(r) == pytest.approx(0.9 + 0.5 + 0.2)
    row = metrics.oracle([r]).iloc[0]
    assert row["oracle"] == pytest.approx((8 / 1.6) / (8 / 1.0)) and row["achieved"] == s["speedup"]
    assert row["censored"] == pytest.approx(0.5) and row["wasted"] == pytest.approx(3 / 8)


def test_oracle_skips_sampling_and_trees():
    sampled = record([0, 2], [0, 1], [0.0, 0.2], [0.1, 0.1], 1.0, 3, temperature=1.0)
    tree = record([0, 5], [0, 1], [0.0, 0.2], [0.1, 0.1], 1.0, 3, entropy=[[], [0.1, 0.2]], config_hash="t")
    assert metrics.oracle([sampled, tree]).empty


def test_config_column_only_where_configs_share_a_row_label():
    gamma3 = record([0, 3], [0, 1], [0.0, 0.3], [0.1, 0.1], 1.0, 3, policy_params="gamma=3")
    gamma5 = record([0, 5], [0, 1], [0.0, 0.5], [0.1, 0.1], 1.0, 3, policy_params="gamma=5", config_hash="h5")
    longer = record([0, 3], [0, 1], [0.0, 0.3], [0.1, 0.1], 1.0, 3, policy_params="gamma=3", config_hash="h32",
                    max_new_tokens=32)
    assert metrics.label_frame(metrics.group([gamma3, gamma5]))["config"].tolist() == ["gamma=3", "gamma=5"]
    frame = metrics.label_frame(metrics.group([gamma3, longer]))
    assert list(frame.columns) == ["method", "policy", "length"] and frame["length"].tolist() == [16, 32]



def test_config_column_names_the_parameters_that_differ():
    params = {"policy.c": 0.15, "drafter.top_k": 10, "drafter.depth": 5, "drafter.total_token": 60}
    official = record([0, 3], [0, 1], [0.0, 0.3], [0.1, 0.1], 1.0, 3, policy_params="c=0.15",
                      config_params=params)
    small = record([0, 3], [0, 1], [0.0, 0.3], [0.1, 0.1], 1.0, 3, policy_params="c=0.15", config_hash="k4",
                   config_params={**params, "drafter.top_k": 4, "drafter.total_token": 12})
    frame = metrics.label_frame(metrics.group([official, small]))
    assert frame["config"].tolist() == ["top_k=10, total_token=60", "top_k=4, total_token=12"]
    drafts = {"pair.draft.path": "drafts/d", "pair.eagle.path": "drafts/smollm2-135m-eagle"}
    shipped = record([0, 3], [0, 1], [0.0, 0.3], [0.1, 0.1], 1.0, 3, policy_params="c=0.15",
                     config_params={**params, **drafts})
    candidate = record([0, 3], [0, 1], [0.0, 0.3], [0.1, 0.1], 1.0, 3, policy_params="c=0.15", config_hash="cand",
                       config_params={**params, **drafts, "pair.eagle.path": "checkpoints/candidates/eagle"})
    frame = metrics.label_frame(metrics.group([shipped, candidate]))
    assert frame["config"].tolist() == ["eagle.path=drafts/smollm2-135m-eagle", "eagle.path=checkpoints/candidates/eagle"]
    # a flag without a dot (ar_fallback) and a generation setting (dtype) label their rows too
    on = record([0, 3], [0, 1], [0.0, 0.3], [0.1, 0.1], 1.0, 3, policy_params="c=0.15", config_hash="fb",
                config_params={**params, "ar_fallback": "on"})
    fp32 = record([0, 3], [0, 1], [0.0, 0.3], [0.1, 0.1], 1.0, 3, policy_params="c=0.15", config_hash="f32",
                  config_params={**params, "ar_fallback": None, "run.dtype": "float32"})
    frame = metrics.label_frame(metrics.group([official, on, fp32]))
    assert frame["config"].tolist() == ["ar_fallback=None, dtype=None", "ar_fallback=on, dtype=None",
                                        "ar_fallback=None, dtype=float32"]

def test_comparisons_of_the_two_runs(runs):
    """svip vs fixed share the method: one paired comparison over every question-turn, shown as a table."""
    sd = [r for r in load_records([runs]) if r["method"] != "ar"]
    frame = metrics.comparisons(sd)
    assert len(frame) == 1
    row = frame.iloc[0]
    groups = list(metrics.group(sd).values())
    assert row["same"] == "method vanilla_sd" and row["n"] == len(groups[0])
    assert {row["a"], row["b"]} == {"vanilla_sd / svip", "vanilla_sd / fixed"}
    a, b = (summarize_group(rs) for rs in groups)
    assert row["speedup_a"] == pytest.approx(a["speedup"]) and row["speedup_b"] == pytest.approx(b["speedup"])
    assert row["speedup_diff"] == pytest.approx(b["speedup"] - a["speedup"])
    lo, hi = row["speedup_diff_ci"]
    assert row["speedup_verdict"] == ("within noise" if lo <= 0 <= hi else "resolved")


def test_compare_subcommand_is_the_paired_comparison_of_two_run_dirs(runs, capsys):
    """compare A B prints b - a as comparisons() has it for the same two configurations."""
    main(["compare", str(runs / "svip"), str(runs / "fixed")])
    table = capsys.readouterr().out.splitlines()
    header = [c.strip() for c in table[0].strip("|").split("|")]
    row = dict(zip(header, (c.strip() for c in table[2].strip("|").split("|"))))
    sd = [r for r in load_records([runs]) if r["method"] != "ar"]
    svip, fixed = ([r for r in sd if r["policy"] == name] for name in ("svip", "fixed"))
    expected = metrics.compare(svip, fixed)
    assert row["b"].endswith("fixed") and int(row["n"]) == expected["n"]
    assert float(row["speedup_diff"].split()[0]) == pytest.approx(expected["speedup_diff"], abs=5e-4)
    assert float(row["tau_b"]) == pytest.approx(expected["tau_b"], abs=5e-4)
    for side, records in (("a", svip), ("b", fixed)):  # per-round costs over the shared question-turns
        t_draft, t_verify = metrics.decode_costs(records)
        assert float(row[f"t_draft_ms_{side}"]) == pytest.approx(t_draft * 1e3, abs=5e-4)
        assert float(row[f"t_verify_ms_{side}"]) == pytest.approx(t_verify * 1e3, abs=5e-4)
    some = [r for r in fixed if r["question_id"] == fixed[0]["question_id"]]
    row = metrics.compare_runs(svip, some).iloc[0]
    kept = [r for r in svip if metrics.run_key(r) in {metrics.run_key(x) for x in some}]
    t_draft, t_verify = metrics.decode_costs(kept)
    assert row["t_verify_ms_a"] == pytest.approx(t_verify * 1e3) and len(kept) < len(svip)
    assert row["t_draft_ms_a"] == pytest.approx(t_draft * 1e3)
    assert row["t_verify_ms_b"] == pytest.approx(metrics.decode_costs(some)[1] * 1e3)


def test_compare_subcommand_errors_are_one_line(runs, tmp_path, capsys):
    for args, message in [([runs, runs / "fixed"], "holds 2 configurations"),
                          ([runs / "svip", write_records(tmp_path / "ar.jsonl", [
                              r for r in read_records(runs / "svip" / "records.jsonl") if r["method"] == "ar"])],
                           "no speculative-decoding records")]:
        with pytest.raises(SystemExit):
            main(["compare", *map(str, args)])
        assert message in capsys.readouterr().err
    elsewhere = variant([r for r in read_records(runs / "fixed" / "records.jsonl") if r["method"] != "ar"],
                        question_id="elsewhere")
    with pytest.raises(SystemExit):
        main(["compare", str(runs / "svip"), str(write_records(tmp_path / "elsewhere.jsonl", elsewhere))])
    assert "share no question-turn" in capsys.readouterr().err


# ---- user errors -----------------------------------------------------------------------------------------------

def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(SvbenchError, match="does not exist"):
        analyze([tmp_path / "nope"], tmp_path / "out")
    with pytest.raises(SvbenchError, match="no records.jsonl"):
        analyze([tmp_path], tmp_path / "out")


def test_non_record_files_are_clear_errors(runs, tmp_path):
    with pytest.raises(SvbenchError, match="neither a svbench records file"):
        analyze([runs / "svip" / "summary.json"], tmp_path / "out")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(SvbenchError, match="is empty"):
        analyze([tmp_path / "empty.jsonl"], tmp_path / "out")
    (tmp_path / "blob.bin").write_bytes(bytes(range(256)))
    with pytest.raises(SvbenchError, match="neither"):
        analyze([tmp_path / "blob.bin"], tmp_path / "out")


def test_only_ar_records_is_a_clear_error(runs, tmp_path):
    ar = [r for r in read_records(runs / "svip" / "records.jsonl") if r["method"] == "ar"]
    path = write_records(tmp_path / "ar" / "records.jsonl", ar)
    with pytest.raises(SvbenchError, match="no speculative-decoding records"):
        analyze([path], tmp_path / "out")


def test_cli_prints_files_and_one_error_line(runs, tmp_path, capsys):
    main([str(runs), "--out", str(tmp_path / "out")])
    printed = capsys.readouterr().out.split()
    assert {Path(p).name for p in printed} == OUTPUTS - LENGTH_OUTPUTS
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path / "missing"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and err[0].startswith("svbench: error:")


# ---- Spec-Bench interop ----------------------------------------------------------------------------------------

def by_key(records):
    return {(r["method"], r["policy"], r["question_id"], r["turn"], r["run"]): r for r in records}


def test_export_import_round_trip(runs, tmp_path, capsys):
    original = read_records(runs / "svip" / "records.jsonl")
    path = export_answers(original, tmp_path / "answers.jsonl")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert {line["model_id"] for line in lines} == {"ar-none", "vanilla_sd-svip"}
    assert all({"question_id", "category", "model_id", "choices", "tstamp"} <= set(line) for line in lines)
    back = import_answers(path)
    assert by_key(back).keys() == by_key(original).keys()
    for key, r in by_key(original).items():
        b = by_key(back)[key]
        assert b["new_tokens"] == r["new_tokens"] and b["wall_time"] == r["wall_time"]
        assert b["rounds"]["accepted"] == r["rounds"]["accepted"]
        assert b["ar_wall_time"] == r["ar_wall_time"] and b["category"] == r["category"]
    sd = [r for r in original if r["method"] != "ar"]
    back_sd = [r for r in back if r["method"] != "ar"]
    assert summarize(back_sd)["overall"]["speedup"] == summarize(sd)["overall"]["speedup"]
    assert summarize(back_sd)["overall"]["tau"] == summarize(sd)["overall"]["tau"]
    imported = metrics.compare(back_sd, sd)  # imported answers carry no draft or verify times: no costs, not 0.0
    assert imported["t_verify_ms_a"] is None and imported["t_draft_ms_a"] is None
    assert imported["t_verify_ms_b"] == pytest.approx(metrics.decode_costs(sd)[1] * 1e3)
    # the CLI: SD answers to --out, the AR baseline beside it; analysis reads them back
    main(["export", str(runs / "svip"), "--out", str(tmp_path / "cli" / "answers.jsonl")])
    assert capsys.readouterr().out.split() == [str(tmp_path / "cli" / "answers.jsonl"),
                                               str(tmp_path / "cli" / "answers-ar.jsonl")]
    written = analyze([tmp_path / "cli" / "answers.jsonl"], tmp_path / "out")
    assert "speedup_by_category.md" in {p.name for p in written}


def test_import_spec_bench_files_without_svbench_fields(tmp_path):
    def answer(model_id, new_tokens, wall_time, accept_lengths, steps):
        return {"question_id": 81, "category": "mt_bench", "answer_id": "x", "model_id": model_id, "tstamp": 0.0,
                "choices": [{"index": 0, "turns": ["a", "b"], "decoding_steps": steps, "new_tokens": new_tokens,
                             "wall_time": wall_time, "accept_lengths": accept_lengths}]}
    method = write_records(tmp_path / "vicuna-7b-v1.3-eagle2.jsonl",
                           [answer("vicuna-7b-v1.3-eagle2", [6, 4], [1.0, 2.0], [3, 2, 1, 4], [2, 2])])
    base = write_records(tmp_path / "vicuna-7b-v1.3-vanilla-float16-temp-0.0.jsonl",
                         [answer("vicuna-7b-v1.3-vanilla-float16-temp-0.0", [6, 4], [3.0, 2.0], [], [6, 4])])
    records = load_records([method, base])
    sd = [r for r in records if r["method"] != "ar"]
    assert [r["method"] for r in sd] == ["vicuna-7b-v1.3-eagle2"] * 2
    assert [r["rounds"]["accepted"] for r in sd] == [[2, 1], [0, 3]]
    assert [r["speedup"] for r in sd] == [3.0, 1.0]
    assert summarize(sd)["overall"]["speedup"] == statistics.fmean([6.0, 2.0]) / statistics.fmean([2.0, 2.0])
    (tmp_path / "bad.jsonl").write_text(json.dumps({"question_id": 1, "choices": "no"}) + "\n")
    with pytest.raises(SvbenchError, match="not a Spec-Bench model_answer line"):
        import_answers(tmp_path / "bad.jsonl")


# ---- the notebook ----------------------------------------------------------------------------------------------

def run_notebook(monkeypatch, runs_dir, out_dir) -> dict:
    """Execute the notebook's code cells in order in one namespace (no Jupyter kernel in the venv)."""
    notebook = json.loads((REPO / "notebooks" / "analysis.ipynb").read_text())
    assert notebook["nbformat"] == 4
    monkeypatch.setenv("SVBENCH_RUNS", str(runs_dir))
    monkeypatch.setenv("SVBENCH_ANALYSIS_OUT", str(out_dir))
    namespace: dict = {}
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), "analysis.ipynb", "exec"), namespace)
    return namespace


@pytest.mark.slow
def test_notebook_runs(runs, tmp_path, monkeypatch, capsys):
    namespace = run_notebook(monkeypatch, runs, tmp_path / "out")
    assert {p.name for p in namespace["files"]} == OUTPUTS - LENGTH_OUTPUTS
    assert "### speedup_by_category" in capsys.readouterr().out


@pytest.mark.slow
def test_notebook_without_runs(tmp_path, monkeypatch, capsys):
    namespace = run_notebook(monkeypatch, tmp_path / "empty", tmp_path / "out")
    assert namespace["files"] == [] and "nothing to analyse" in capsys.readouterr().out
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_notebook_over_the_committed_paper_tables(tmp_path, monkeypatch, capsys):
    """The notebook's default input: the records of SVIP Tables 1-4 committed under results/experiments."""
    runs = REPO / "results" / "experiments"
    if not any(runs.glob("**/records.jsonl")):
        pytest.skip("no committed results/experiments in this checkout")
    monkeypatch.delenv("SVBENCH_RUNS", raising=False)
    notebook = json.loads((REPO / "notebooks" / "analysis.ipynb").read_text())
    assert '"experiments"' in "".join(notebook["cells"][1]["source"])  # the default the cell below overrides
    namespace = run_notebook(monkeypatch, runs, tmp_path / "out")
    assert {p.name for p in namespace["files"]} == OUTPUTS
    table = (tmp_path / "out" / "speedup_by_length.md").read_text()
    long_form = {r["max_new_tokens"] for r in load_records([runs]) if r["benchmark"] == "mt_bench_long"}
    header = table.splitlines()[0]
    assert len(long_form) > 1 and all(f"| {n} |" in header for n in long_form) and "mt_bench_long" in table


def test_config_labels_read_the_pairs_draft_folders_from_summary_json(tmp_path):
    from svbench.analysis.inputs import config_labels

    config = {"policy": {"name": "svip", "c": 0.15}, "method": {"drafter": {"_target_": "x", "top_k": 4}},
              "pair": {"name": "p", "target": {"path": "t"}, "eagle": {"source": "trained", "path": "cand"},
                       "prompt_template": "chat"}}
    config.update(dtype="bfloat16", benchmark={"name": "smoke", "path": None})
    (tmp_path / "summary.json").write_text(json.dumps({"config_hash": "h", "config": config}))
    run = {f"run.{k}": None for k in ("device", "attention", "top_k", "top_p", "prompt_template", "threads",
                                      "benchmark_file")}
    assert config_labels(tmp_path / "records.jsonl") == {
        "h": ("c=0.15", {**run, "run.dtype": "bfloat16", "policy.c": 0.15, "drafter.top_k": 4,
                         "pair.eagle.path": "cand"})}


# ---- the papers' claims ----------------------------------------------------------------------------------------

def claim_records(method, policy, speedups, length=256, taus=None, params=None):
    """One record per question with the given speedup over an AR speed of 10 tokens/s (and tau 2); params: the
    drafter parameters a summary.json would tell (inputs.config_labels)."""
    out = []
    for i, s in enumerate(speedups):
        tau = (taus or [2.0] * len(speedups))[i]
        out.append(record([0, 3, 3], [0, tau - 1, tau - 1], [0.0] * 3, [0.1] * 3, 10 / (10 * s), 10,
                          method=method, policy=policy, pair="p", benchmark="spec_bench", max_new_tokens=length,
                          question_id=f"q{i}", config_hash=f"{method}-{policy}-{length}-{sorted((params or {}).items())}",
                          ar_new_tokens=10, ar_wall_time=1.0, **({"config_params": params} if params else {})))
    return out


CPU_TREE = {"drafter.top_k": 4, "drafter.depth": 3, "drafter.total_token": 12}  # conf/method/eagle2_cpu.yaml
OFFICIAL_TREE = {"drafter.top_k": 10, "drafter.depth": 5, "drafter.total_token": 60}  # conf/method/eagle2.yaml


def test_claims_verdicts_from_paired_intervals(tmp_path):
    """agrees / disagrees / within noise / too few / not run, the best-method row, the long-form growth row;
    the numbers are compare()'s."""
    from svbench.analysis.claims import claims_table

    rng = np.random.default_rng(0)
    base = 1.0 + 0.2 * rng.random(12)
    t1 = (claim_records("vanilla_sd", "fixed", base) + claim_records("vanilla_sd", "svip", base + 0.3)
          + claim_records("vanilla_sd", "heuristic", base + 0.3 + rng.normal(0, 0.05, 12)))
    t3 = claim_records("glide", "fixed", base - 0.2) + claim_records("glide", "svip", base + 0.25)
    long = []
    for n, gain in ((128, 0.1), (2048, 0.4)):  # the gain grows by 0.3 with length, on 3 questions
        long += claim_records("vanilla_sd", "fixed", base[:3], n) + claim_records("vanilla_sd", "svip", base[:3] + gain, n)
    for table, records in {"svip_table1": t1, "svip_table3": t3, "svip_table2": long}.items():
        write_records(tmp_path / table / "p" / "x" / "records.jsonl", records)
    rows = {line.split(" | ")[0].lstrip("| "): line for line in claims_table(tmp_path, "p").splitlines()[2:]}
    assert rows["SVIP > fixed length, vanilla SD"].endswith("| **agrees** |")
    svip_fixed = metrics.compare(t1[:12], t1[12:24])
    assert f"{svip_fixed['speedup_diff']:+.3f}" in rows["SVIP > fixed length, vanilla SD"]
    assert "within noise: ~" in rows["SVIP > heuristic, vanilla SD"]
    assert "| **disagrees** |" in rows["GliDe > vanilla SD (glimpsing the target's cache), SVIP"]  # 0.05 slower
    assert rows["SVIP > fixed, GliDe"].endswith("| **agrees** |")
    assert "not run: glide_cape + fixed" in rows["CaPE > GliDe, fixed"]
    assert "too few (n<5): ~5 question-turns" in rows["SVIP > fixed length, long-form, 2048 tokens"]
    growth = rows["SVIP's gain over fixed grows with length (128 -> 2048 tokens)"]
    assert "+0.300 [" in growth and "(n=3)" in growth and "too few" in growth
    assert "vanilla_sd + svip (256 tokens): " in rows["best method >= 2.0x AR on the Spec-Bench subset"]
    assert rows["best method >= 2.0x AR on the Spec-Bench subset"].endswith("| **not reached** |")
    write_records(tmp_path / "svip_table4" / "p" / "x" / "records.jsonl",  # Table 4 run at another length
                  claim_records("eagle2", "svip", base + 0.5, length=128, params=CPU_TREE))
    line = next(l for l in claims_table(tmp_path, "p").splitlines() if l.startswith("| EAGLE-2 > vanilla SD, SVIP"))
    assert "not comparable: max_new_tokens 256 vs 128" in line
    write_records(tmp_path / "svip_table3" / "p" / "y" / "records.jsonl",  # a second run of glide + svip
                  [dict(r, config_hash="other") for r in claim_records("glide", "svip", base)])
    with pytest.raises(SvbenchError, match="glide \\+ svip: 2 configurations"):
        claims_table(tmp_path, "p")
    with pytest.raises(SvbenchError, match="no paper-table records"):
        claims_table(tmp_path, "other_pair")


def test_claims_tell_eagle2s_official_tree_from_its_cpu_tree(tmp_path):
    """Both trees' records say method eagle2; the drafter parameters from summary.json tell the conf apart."""
    from svbench.analysis.claims import claims_table, conf_name

    base = 1.0 + 0.2 * np.random.default_rng(2).random(8)
    official = claim_records("eagle2", "fixed", base, params=OFFICIAL_TREE) + \
        claim_records("eagle2", "svip", base + 0.3, params=OFFICIAL_TREE)
    cpu = claim_records("eagle2", "fixed", base + 0.2, params=CPU_TREE) + \
        claim_records("eagle2", "svip", base + 0.6, params=CPU_TREE)
    write_records(tmp_path / "svip_table4" / "p" / "x" / "records.jsonl", official + cpu)
    rows = {line.split(" | ")[0].lstrip("| "): line for line in claims_table(tmp_path, "p").splitlines()[2:]}
    assert "+0.300 [" in rows["SVIP > fixed, EAGLE-2 (official tree)"]
    assert "+0.400 [" in rows["SVIP > fixed, EAGLE-2 (CPU tree)"]
    assert "eagle2_cpu + svip (256 tokens): " in rows["best method >= 2.0x AR on the Spec-Bench subset"]
    assert conf_name(official[0]) == "eagle2" and conf_name(dict(official[0], method="eagle3")) == "eagle3"
    other = dict(official[0], config_params={**OFFICIAL_TREE, "drafter.top_k": 7})  # overridden: no conf's
    assert conf_name(other) == "eagle2"


def test_claims_disagree_when_b_is_slower(tmp_path):
    from svbench.analysis.claims import claims_table

    base = 1.0 + 0.2 * np.random.default_rng(1).random(8)
    write_records(tmp_path / "svip_table1" / "p" / "x" / "records.jsonl",
                  claim_records("vanilla_sd", "fixed", base + 0.2) + claim_records("vanilla_sd", "svip", base))
    line = next(l for l in claims_table(tmp_path, "p").splitlines() if l.startswith("| SVIP > fixed length, vanilla"))
    assert line.endswith("| **disagrees** |") and "-0.200 [" in line


def test_a_repeated_measurement_in_a_second_folder_is_left_out_with_a_warning(tmp_path, capsys):
    """Records are unique by key across files: the same record read twice is kept once silently, another
    measurement of the same configuration and question-turn is left out with a warning (never averaged in)."""
    first, again = record([0, 3], [0, 1], [0.0, 0.3], [0.1, 0.1], 1.0, 3), \
        record([0, 3], [0, 1], [0.0, 0.3], [0.1, 0.1], 2.0, 3)
    for name, rows in (("a", [first]), ("b", [first]), ("c", [again])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [r["wall_time"] for r in load_records([tmp_path / "a", tmp_path / "b"])] == [1.0]
    assert "warning" not in capsys.readouterr().err
    assert [r["wall_time"] for r in load_records([tmp_path / "a", tmp_path / "c"])] == [1.0]
    assert "1 record(s) of" in capsys.readouterr().err
    ar = {**first, "method": "ar", "policy": "none"}  # every method folder times its own AR: one kept, no warning
    for name, wall in (("d", 1.0), ("e", 1.5)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "records.jsonl").write_text(json.dumps({**ar, "wall_time": wall}) + "\n")
    assert [r["wall_time"] for r in load_records([tmp_path / "d", tmp_path / "e"])] == [1.0]
    assert "warning" not in capsys.readouterr().err


def test_round_steps_counts_steps_per_round_by_method(tmp_path):
    """experiments/round_steps.py: the distribution of drafting steps per round and the share over --over, per
    method, skipping AR records; a missing file is one argparse line."""
    records = tmp_path / "records.jsonl"
    rows = [{"method": "glide", "rounds": {"steps": [1, 1, 5, 2]}}, {"method": "ar", "rounds": None},
            {"method": "glide", "rounds": {"steps": [6]}}, {"method": "glide_cape", "rounds": {"steps": [1, 2]}}]
    records.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    script = str(Path(__file__).resolve().parents[1] / "experiments" / "round_steps.py")
    done = subprocess.run([sys.executable, script, str(records), "--over", "4"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines == [f"{records}: glide: 5 rounds; steps per round {{1: 2, 2: 1, 5: 1, 6: 1}}; over 4: 2 (0.4000)",
                     f"{records}: glide_cape: 2 rounds; steps per round {{1: 1, 2: 1}}; over 4: 0 (0.0000)"]
    bad = subprocess.run([sys.executable, script, str(tmp_path / "none.jsonl")], capture_output=True, text=True,
                         timeout=60)
    last = bad.stderr.strip().splitlines()[-1]
    assert bad.returncode == 2 and last.endswith(f"no such records file: {tmp_path / 'none.jsonl'}")


def test_round_costs_averages_rounds_after_the_prefill(tmp_path):
    """experiments/round_costs.py: AR's step and SD's verify/draft time per round, the prefill round left out,
    and their ratio; a folder without records or without both sides is one error line."""
    run = tmp_path / "run"
    run.mkdir()
    rows = [{"method": "ar", "rounds": {"verify_s": [0.5, 0.02, 0.04], "draft_s": [0.0, 0.0, 0.0]}},
            {"method": "eagle2", "rounds": {"verify_s": [0.5, 0.045], "draft_s": [0.0, 0.004]}},
            {"method": "eagle2", "rounds": {"verify_s": [0.7, 0.03, 0.03], "draft_s": [0.0, 0.002, 0.003]}}]
    (run / "records.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    script = str(Path(__file__).resolve().parents[1] / "experiments" / "round_costs.py")
    done = subprocess.run([sys.executable, script, str(run)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == f"| {run} | 30.0 | 35.0 | 3.0 | 1.167 |"
    for bad_rows, message in (([], "no such file"), (rows[:1], "needs AR and SD records side by side")):
        bad = tmp_path / f"bad{len(bad_rows)}"
        bad.mkdir()
        if bad_rows:
            (bad / "records.jsonl").write_text(json.dumps(bad_rows[0]) + "\n")
        out = subprocess.run([sys.executable, script, str(bad)], capture_output=True, text=True, timeout=60)
        assert out.returncode == 1 and message in out.stderr and out.stdout == ""
