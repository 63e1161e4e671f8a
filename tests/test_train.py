"""The distillation pipeline end to end on pair=tiny, in seconds: data (resumable), training (resumable),
export, loading as a pair, held-out evaluation; and the train/eval prompt separation."""
import ast
import gzip
import json
import os
import random
import shutil
import subprocess
import sys
from collections import Counter
from argparse import Namespace
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from svbench.benchmarks import build_prompt
from svbench.config import build_drafter, group_config
from svbench.decoding.drafters import drafter_class
from svbench.decoding.drafters.draft_model import DraftModelDrafter
from svbench.decoding.loop import generate
from svbench.decoding.policies import FixedPolicy
from svbench.models import load_pair
from svbench.train import data as train_data
from svbench.train import eval as train_eval
from svbench.train.__main__ import top_tokens
from svbench.train.recipes import RECIPES
from svbench.benchmarks import data_dir as default_data_dir
from svbench.train.prompts import evaluation_turns, load_train_prompts, normalise, train_prompt_dir

REPO = Path(__file__).resolve().parents[1]


def test_training_prompts_are_disjoint_from_every_evaluation_set(data_dir):
    prompts = load_train_prompts(data_dir / "train_prompts")
    assert len(prompts) > 25000
    assert {p.source.split("/")[0] for p in prompts} >= {"gsm8k", "gpteacher", "ud_german", "scitldr", "oasst"}
    evaluation = evaluation_turns(data_dir)
    assert len(evaluation) > 900
    overlap = [p.text for p in prompts if normalise(p.text) in evaluation]
    assert overlap == []
    # the check can fail: a Spec-Bench turn is found
    spec_turn = json.loads((data_dir / "spec_bench/question.jsonl").read_text().splitlines()[0])["turns"][0]
    assert normalise(spec_turn) in evaluation


def gunzipped_copy(src: Path, dst: Path, files=None) -> Path:
    """dst/<folder>/<name>: a plain copy of src's <name>.gz files (all of them, or the given relative paths)."""
    for gz in sorted(src.rglob("*.gz")) if files is None else [src / f for f in files]:
        plain = dst / gz.relative_to(src).with_suffix("")
        plain.parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(gz) as fin, open(plain, "wb") as fout:
            shutil.copyfileobj(fin, fout)
    return dst


def test_gzip_and_plain_prompt_files_give_the_same_prompts(tmp_path):
    shipped = default_data_dir(packaged=True) / "train_prompts"
    files = ["oasst/en_100_text.jsonl.gz", "oasst/prompt_lottery_en_250_text.jsonl.gz",
             "ud_german/de_gsd-ud-dev.conllu.gz", "gpteacher/roleplay-simple-deduped-roleplay-instruct.json.gz"]
    compressed = tmp_path / "gz"
    for f in files:
        (compressed / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shipped / f, compressed / f)
    plain = load_train_prompts(gunzipped_copy(shipped, tmp_path / "plain", files))
    assert load_train_prompts(compressed) == plain  # same texts, order and sources (no .gz in a source)
    assert [p.source for p in plain][:1] == ["gpteacher/roleplay-simple-deduped-roleplay-instruct.json"]
    assert len(plain) > 3000 and {p.source.split("/")[0] for p in plain} == {"gpteacher", "oasst", "ud_german"}


def test_shipped_prompts_load_like_their_plain_copy(tmp_path, monkeypatch):
    shipped = default_data_dir(packaged=True) / "train_prompts"
    prompts = load_train_prompts(shipped)
    assert len(prompts) == 25717  # README: 25,717 distinct prompts
    assert prompts == load_train_prompts(gunzipped_copy(shipped, tmp_path / "plain"))
    monkeypatch.delenv("SVBENCH_DATA", raising=False)  # order: --prompts-dir, $SVBENCH_DATA, the shipped folder
    assert train_prompt_dir() == shipped
    monkeypatch.setenv("SVBENCH_DATA", str(tmp_path))
    (tmp_path / "train_prompts").mkdir()
    assert train_prompt_dir() == tmp_path / "train_prompts"
    assert train_prompt_dir(str(shipped)) == shipped


def data_args(out, **kw):
    args = dict(out=str(out), pair="tiny", prompts_dir=None, fixed=False, num_prompts=12, shard_size=4, batch_size=4,
                max_new_tokens=12, max_prompt_tokens=3000, temperatures="0,1.0", heldout_permille=400, dtype="float32",
                seed=0, threads=None, max_batch_tokens=32768, prefill_group=3, attention="sdpa")
    args.update(kw)
    return Namespace(**args)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("data")
    train_data.run(data_args(out))
    return out


def test_data_generation_shards_manifest_and_resume(tiny_data):
    manifest = json.loads((tiny_data / "manifest.json").read_text())
    assert [s["rows"] for s in manifest["shards"]] == [4, 4, 4]
    rows = train_data.read_shards(tiny_data)
    assert {r["split"] for r in rows} == {"train", "heldout"}
    assert {r["temperature"] for r in rows} == {0.0, 1.0}
    greedy = [r for r in rows if r["temperature"] == 0.0]
    pair = load_pair({"name": "tiny", "target": {"source": "tiny", "seed": 0, "vocab_size": 512, "hidden_size": 64,
                                                  "num_layers": 3, "num_heads": 4, "num_kv_heads": 2}},
                     drafter_cls=None)
    for r in greedy[:2]:  # a greedy answer is the target's own greedy continuation
        prompt = r["ids"][: r["prompt_len"]]
        assert r["ids"][r["prompt_len"]:] == generate(pair.target, prompt, len(r["ids"]) - r["prompt_len"]).ids
    before = (tiny_data / "shard-00001.parquet").read_bytes()
    (tiny_data / "shard-00001.parquet").unlink()  # an interrupted run: the missing shard is regenerated
    train_data.run(data_args(tiny_data))
    assert (tiny_data / "shard-00001.parquet").read_bytes() == before
    with pytest.raises(Exception, match="other settings"):
        train_data.run(data_args(tiny_data, max_new_tokens=5))


def test_a_larger_num_prompts_grows_the_folder_to_what_one_run_gives(tiny_data, tmp_path):
    """6 prompts in shards of 4 leave shard 1 short (2 prompts); a run with 12 regenerates it and adds shard 2, and
    the folder is byte for byte the one a single 12-prompt run wrote, also when shard 0 went missing meanwhile."""
    grown = tmp_path / "grown"
    train_data.run(data_args(grown, num_prompts=6))
    manifest = json.loads((grown / "manifest.json").read_text())
    assert manifest["num_prompts"] == 6 and [s["prompts"] for s in manifest["shards"]] == [4, 2]
    (grown / "shard-00000.parquet").unlink()
    train_data.run(data_args(grown, num_prompts=12))
    for k in range(3):
        name = f"shard-{k:05d}.parquet"
        assert (grown / name).read_bytes() == (tiny_data / name).read_bytes(), name
    assert json.loads((grown / "manifest.json").read_text()) == json.loads((tiny_data / "manifest.json").read_text())
    train_data.run(data_args(grown, num_prompts=4))  # a smaller N keeps what the folder has
    assert json.loads((grown / "manifest.json").read_text())["num_prompts"] == 12
    manifest = json.loads((grown / "manifest.json").read_text())
    assert manifest["prompts_sha256"] == json.loads((tiny_data / "manifest.json").read_text())["prompts_sha256"]
    (grown / "manifest.json").write_text(json.dumps({**manifest, "prompts_sha256": "0" * 16}))  # other prompt files
    from svbench.errors import SvbenchError
    with pytest.raises(SvbenchError, match="generated from other prompt files"):
        train_data.run(data_args(grown, num_prompts=16))
    (grown / "manifest.json").write_text("{")
    with pytest.raises(SvbenchError, match="manifest.json is damaged"):
        train_data.run(data_args(grown))


def test_the_makefile_data_commands_resume_the_committed_folders(monkeypatch):
    """`make drafts` re-runs the data commands on the committed folders: their settings and the shipped prompt
    files must match the manifests (a new CLI flag that leaked into the settings once made every resume fail
    with "other settings")."""
    import shlex

    monkeypatch.delenv("SVBENCH_DATA", raising=False)  # make drafts reads the shipped prompt files
    commands = [line.split("svbench.train.data", 1)[1] for line in (REPO / "Makefile").read_text().splitlines()
                if "-m svbench.train.data " in line]
    assert len(commands) == 2
    for command in commands:
        args = train_data.parser().parse_args(shlex.split(command.replace("$(DATA_ARGS)", "")))
        manifest = json.loads((REPO / args.out / "manifest.json").read_text())
        assert train_data.data_settings(args) == manifest["settings"], args.out
        assert train_data.prompt_set_sha256(train_data.prompt_items(args)) == manifest["prompts_sha256"], args.out


def test_manifest_check_catches_changed_missing_and_unlisted_shards(tiny_data, tmp_path):
    from svbench.errors import SvbenchError

    folder = tmp_path / "copy"
    shutil.copytree(tiny_data, folder)
    result = subprocess.run([sys.executable, "-m", "svbench.train.data", "--out", str(folder), "--check"], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "3 shards match manifest.json; 12 rows" in result.stdout, result.stderr
    shard = folder / "shard-00001.parquet"
    good = shard.read_bytes()
    for change, message in ((lambda: shard.write_bytes(good[:-1] + b"x"), "sha256 differs ['shard-00001.parquet']"),
                            (shard.unlink, "missing ['shard-00001.parquet']"),
                            (lambda: (folder / "shard-00009.parquet").write_bytes(good), "not listed ['shard-00009")):
        change()
        with pytest.raises(SvbenchError, match=__import__("re").escape(message)):
            train_data.check_manifest(folder)
        for f in folder.glob("shard-*.parquet"):
            f.unlink()
        for f in tiny_data.glob("shard-*.parquet"):
            shutil.copy(f, folder / f.name)
    train_data.check_manifest(folder)  # restored: passes again


def test_batched_generation_with_refills_equals_ar():
    """generate_all (rows left-padded, finished rows dropped, live rows' K/V carried into refilled batches,
    prompts prefilled row by row or several per right-padded forward) gives each prompt the target's own
    greedy answer, EOS included; prompts of 1 token too."""
    pair = load_pair(group_config("pair", "tiny"), drafter_cls=None)
    prompts = [prompt_ids for prompt_ids in ([7], [3, 9, 200, 41, 5], list(range(20, 57)), [100, 2], [8] * 11,
                                             list(range(300, 310)), [44, 45], [1, 2, 3])]
    refs = [generate(pair.target, p, 24).ids for p in prompts]
    eos = refs[2][5]  # one answer stops early at this token (others may too)
    want = [r[: r.index(eos) + 1] if eos in r else r for r in refs]
    for batch_size, group in ((1, 1), (2, 1), (3, 2), (8, 1), (8, 3), (8, 8)):
        got = train_data.generate_all(pair.target, prompts, 24, 0.0, (eos,), batch_size=batch_size,
                                      prefill_group=group)
        assert got == want, (batch_size, group)
    assert any(len(w) < 24 for w in want) and any(len(w) == 24 for w in want)


def test_unreadable_or_missing_shards_are_one_clear_error(tmp_path):
    from svbench.errors import SvbenchError

    with pytest.raises(SvbenchError, match="no generated data under"):
        train_data.read_shards(tmp_path)
    (tmp_path / "shard-00000.parquet").write_bytes(b"not parquet")
    with pytest.raises(SvbenchError, match="cannot read the Parquet shards"):
        train_data.read_shards(tmp_path)


def test_fixed_responses_are_the_files_own_answers(tmp_path):
    """--fixed: each row is the chat prompt + the file's own response (GSM8K without its <<calc>> marks) + EOS,
    split by the same prompt hash as generated data; a response longer than --max-new-tokens is cut, no EOS."""
    shipped = default_data_dir(packaged=True) / "train_prompts"
    gunzipped_copy(shipped, tmp_path / "p", ["gsm8k/train.jsonl.gz", "gpteacher/codegen-instruct.json.gz"])
    train_data.run(data_args(tmp_path / "d", prompts_dir=str(tmp_path / "p"), fixed=True, num_prompts=40,
                             shard_size=16, max_new_tokens=64))
    rows = train_data.read_shards(tmp_path / "d")
    assert len(rows) == 40 and {r["temperature"] for r in rows} == {None}
    shards = json.loads((tmp_path / "d" / "manifest.json").read_text())["shards"]
    assert not any("generation" in s for s in shards)  # nothing generated: no generation knobs recorded
    pair = load_pair(group_config("pair", "tiny"), drafter_cls=None)
    gsm = {json.loads(line)["question"]: json.loads(line)["answer"]
           for line in (tmp_path / "p/gsm8k/train.jsonl").read_text().splitlines()}
    prompts = {tuple(build_prompt(pair.tokenizer, "chat", [q], [])): a for q, a in gsm.items()}
    checked = 0
    for r in rows:
        answer = prompts.get(tuple(r["ids"][: r["prompt_len"]]))
        if answer is None:
            continue
        want = pair.tokenizer.encode(__import__("re").sub(r"<<[^>]*>>", "", answer).strip(), add_special_tokens=False)
        got = r["ids"][r["prompt_len"]:]
        assert "<<" not in answer or len(want) < len(pair.tokenizer.encode(answer, add_special_tokens=False))
        assert got == (want + [pair.eos_token_ids[0]] if len(want) < 64 else want[:64])
        checked += 1
    assert checked >= 5 and any(r["split"] == "heldout" for r in rows)  # heldout_permille=400 in data_args


@pytest.mark.slow
def test_train_export_load_and_eval(tiny_data, tmp_path):
    out, export = tmp_path / "ckpt", tmp_path / "draft"
    cmd = [sys.executable, "-m", "svbench.train", "pair=tiny", f"data={tiny_data}", f"out={out}", "batch_size=2",
           "num_layers=1", "init_layers=[0]", "reduced_vocab=128", "save_every=2", "seq_len=64", "warmup_steps=1"]
    first = subprocess.run(cmd + ["steps=2"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    second = subprocess.run(cmd + ["steps=4", f"export={export}"], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert second.returncode == 0, second.stderr
    assert "resumed from" in second.stderr and "at step 2" in second.stderr
    assert "steps changed 2 -> 4 at step 2" in second.stderr  # the cosine is re-stretched: said, and recorded
    assert {p.name for p in export.iterdir()} >= {"config.json", "model.safetensors", "vocab_subset.json",
                                                   "train_meta.json"}
    meta = json.loads((export / "train_meta.json").read_text())
    subset = json.loads((export / "vocab_subset.json").read_text())
    assert meta["steps"] == 4 and meta["vocab_size"] == len(subset) <= 128  # tiny data has < 128 distinct tokens
    assert meta["schedule"] == [{"from_step": 0, "steps": 2}, {"from_step": 2, "steps": 4}]
    assert meta["final_train_loss_ema"] is not None and meta["final_train_top1_ema"] is not None
    # re-running the finished run re-exports it with the same metadata: its train_meta.json, or, when that is
    # gone (killed before writing it), the state's: the EMAs come from state.pt, not null
    for lose_meta in (False, True):
        if lose_meta:
            (out / "train_meta.json").unlink()
        again = subprocess.run(cmd + ["steps=4", f"export={export}"], cwd=REPO, capture_output=True, text=True,
                               timeout=300)
        assert again.returncode == 0, again.stderr
        assert ("is finished" in again.stderr) != lose_meta
        meta_again = json.loads((export / "train_meta.json").read_text())
        assert {k: meta_again[k] for k in ("steps", "final_train_loss_ema", "final_train_top1_ema", "schedule")} == \
            {k: meta[k] for k in ("steps", "final_train_loss_ema", "final_train_top1_ema", "schedule")}
    # steps=1: export the state as it is, recorded as the 4-step run it is (its config and schedule)
    peek = subprocess.run(cmd + ["steps=1", f"export={tmp_path / 'peek'}"], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert peek.returncode == 0 and "past steps=1: exporting it without training" in peek.stderr, peek.stderr
    peek_meta = json.loads((tmp_path / "peek" / "train_meta.json").read_text())
    assert peek_meta["steps"] == peek_meta["config"]["steps"] == 4 and peek_meta["schedule"] == meta["schedule"]
    assert (tmp_path / "peek" / "model.safetensors").read_bytes() == (export / "model.safetensors").read_bytes()
    assert json.loads((out / "train_meta.json").read_text())["config"]["steps"] == 4  # the run's own, untouched
    for change, message in ((["steps=6", "num_layers=2", "init_layers=[0,1]"], "other model settings"),
                            (["steps=6", "reduced_vocab=null"], "other model settings")):
        bad = subprocess.run([*cmd, *change], cwd=REPO, capture_output=True, text=True, timeout=300)
        assert bad.returncode == 2 and message in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
    pair = load_pair({"name": "t", "target": {"source": "tiny", "seed": 0, "vocab_size": 512, "hidden_size": 64,
                                               "num_layers": 3, "num_heads": 4, "num_kv_heads": 2},
                      "draft": {"source": "trained", "path": str(export)}}, drafter_cls=DraftModelDrafter)
    assert pair.vocab_subset == subset and pair.network.config.num_hidden_layers == 1
    prompt = build_prompt(pair.tokenizer, "chat", ["hello"], [])
    sd = generate(pair.target, prompt, 20, DraftModelDrafter.from_pair(pair), FixedPolicy(3))
    assert sd.ids == generate(pair.target, prompt, 20).ids  # lossless with the trained reduced-vocab draft
    results = train_eval.run(Namespace(pair="tiny", draft=str(export), layercut=None, data=str(tiny_data),
                                       heldout_seqs=10, spec_bench=0, starts_per_seq=2, full_vocab=False,
                                       dtype="float32", out=str(tmp_path / "eval.json"), seed=0))
    assert set(results["heldout"]["tau"]) == set(range(1, 9))
    check_eval_results(results, tiny_data, heldout_seqs=10, starts_per_seq=2)
    train_eval.write_card(export, results, "python -m svbench.train.eval ...")
    card = (export / "README.md").read_text()
    assert "tau at gamma" in card and meta["data_manifest_hash"] in card
    assert meta["command"].startswith("python -m svbench.train pair=tiny") and "steps=4" in meta["command"]
    assert f"made by: `{meta['command']}`" in card and "soft cross-entropy" in card  # soft_labels: the default
    assert "## Held-out evaluation (greedy, float32, CPU)" in card and "bfloat16 autocast" in card
    # a re-evaluated draft keeps its card's hand-written sections; a new export of the run drops the old card
    (export / "README.md").write_text(card + "\n## Why it ships\n\nbecause.\n")
    train_eval.write_card(export, results, "python -m svbench.train.eval ...")
    assert (export / "README.md").read_text().endswith("## Why it ships\n\nbecause.") and \
        (export / "README.md").read_text().count("## Training") == 1
    from svbench.errors import SvbenchError
    bad = dict(pair="tiny", draft=str(export), layercut=None, data=str(tiny_data), heldout_seqs=10, spec_bench=0,
               starts_per_seq=2, full_vocab=False, dtype="float32", out=None, seed=0)
    for change, message in (({"starts_per_seq": 0}, "must be >= 1"), ({"layercut": 1}, "not both"),
                            ({"write_card": True, "full_vocab": True}, "not with --full-vocab"),
                            ({"write_card": True, "draft": str(tmp_path)}, "has no train_meta.json")):
        with pytest.raises(SvbenchError, match=message):
            train_eval.run(Namespace(**{**bad, **change}))


def test_acceptance_stats_leaves_positions_past_the_drafters_levels_empty():
    """An EAGLE-2 tree of depth 5 drafts 6 levels: position 7 is never drafted, so its acceptance is unknown
    (None), not 0.00; positions no start reached are None too; tau is unchanged by the level count."""
    lengths = [6, 6, 3, 0]
    chain, tree = train_eval.acceptance_stats(lengths), train_eval.acceptance_stats(lengths, levels=6)
    assert chain["per_position_acceptance"][:7] == [0.75, 1.0, 1.0, 2 / 3, 1.0, 1.0, 0.0]
    assert tree["per_position_acceptance"] == chain["per_position_acceptance"][:6] + [None, None]
    assert chain["per_position_acceptance"][7] is None and tree["tau"] == chain["tau"]
    assert tree["tau"][8] == 1 + sum(lengths) / 4


def test_compare_evals_pairs_the_same_starts_and_clusters_by_sequence(tmp_path, capsys):
    """tau_a/tau_b are 1 + mean min(L, gamma) over the shared starts; the interval resamples a sequence's starts
    together (all starts in one sequence: no interval); a longer draft everywhere is resolved, an equal one not;
    a split on other starts or other text (sequences_sha) is skipped with a note, one without a hash is paired
    with a note; no pairable split, or an eval JSON without per-start lengths, is a one-line error."""
    from svbench.errors import SvbenchError
    starts = [[s, t] for s in range(8) for t in (10, 20, 30)]
    a_len = [(s * 3 + i) % 4 for s in range(8) for i in range(3)]
    b_len = [n + 1 for n in a_len]

    def split(lengths, at=starts, sha="text"):
        return {"starts": at, "lengths": lengths, **({} if sha is None else {"sequences_sha": sha})}

    rows, notes = train_eval.compare_evals({"heldout": split(a_len)}, {"heldout": split(b_len)})
    assert notes == [] and [r["gamma"] for r in rows] == list(range(1, 9)) and {r["seqs"] for r in rows} == {8}
    for r in rows:
        g = r["gamma"]
        assert r["tau_a"] == pytest.approx(1 + sum(min(n, g) for n in a_len) / 24)
        assert r["tau_diff"] == pytest.approx(r["tau_b"] - r["tau_a"])
        assert r["tau_diff_ci"][0] <= r["tau_diff"] <= r["tau_diff_ci"][1]
    assert rows[-1]["tau_diff"] == pytest.approx(1) and rows[-1]["verdict"] == "resolved"  # b = a + 1 everywhere
    same, _ = train_eval.compare_evals({"heldout": split(a_len)}, {"heldout": split(a_len)})
    assert all(r["tau_diff"] == 0 and r["verdict"] == "within noise" for r in same)
    one_seq = [[0, t] for t in range(24)]
    lone, _ = train_eval.compare_evals({"heldout": split(a_len, one_seq)}, {"heldout": split(b_len, one_seq)})
    assert all(r["tau_diff_ci"] is None and r["verdict"] is None for r in lone)
    with pytest.raises(SvbenchError, match="no split to pair; skipped heldout: measured on different starts"):
        train_eval.compare_evals({"heldout": split(a_len)}, {"heldout": split(a_len, starts[::-1])})
    # the same starts on other text (Spec-Bench answers generated in another dtype): skipped; a split in one file
    # only: skipped; no hash on one side: paired on the starts, with a note
    rows, notes = train_eval.compare_evals({"heldout": split(a_len, sha=None), "spec_bench": split(a_len)},
                                           {"heldout": split(b_len), "spec_bench": split(b_len, sha="other")}, "A", "B")
    assert {r["split"] for r in rows} == {"heldout"} and rows[-1]["tau_diff"] == pytest.approx(1)
    assert notes == ["heldout: paired on its starts; the text is unchecked (no sequences_sha in A)",
                     "skipped spec_bench: measured on different starts or text (seed, data, counts, or target "
                     "answers of another dtype or target differ): not paired"]
    _, notes = train_eval.compare_evals({"heldout": split(a_len), "spec_bench": split(a_len)},
                                        {"heldout": split(b_len)}, "A", "B")
    assert notes == ["skipped spec_bench: only in A"]
    with pytest.raises(SvbenchError, match="no per-start lengths"):
        train_eval.compare_evals({"heldout": {"tau": {}}}, {"heldout": split(a_len)})
    with pytest.raises(SvbenchError, match="24 starts but 23 lengths"):
        train_eval.compare_evals({"heldout": split(a_len[1:])}, {"heldout": split(a_len)})
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"heldout": split(a_len)}))
    b.write_text(json.dumps({"heldout": split(b_len)}))
    train_eval.main(["compare", str(a), str(b)])
    out = capsys.readouterr().out
    assert "| heldout | 8 | 24 | 8 |" in out and out.count("resolved") >= 1
    for bad, message in ((tmp_path / "missing.json", "no eval JSON at"), (tmp_path, "not a readable eval JSON")):
        with pytest.raises(SystemExit):
            train_eval.main(["compare", str(a), str(bad)])
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


def check_eval_results(results, data, heldout_seqs, starts_per_seq):
    """train_eval.run's numbers against values counted here: the drafting starts from the held-out greedy rows
    (every answer position with GAMMA_MAX reference tokens after it, at most starts_per_seq per row), tau from
    the per-position acceptance (tau(g) = 1 + sum_{i<g} P(the first i+1 drafts accepted)), the cost ratio."""
    gamma = train_eval.GAMMA_MAX
    rows = [r for r in train_data.read_shards(data, split="heldout") if r["temperature"] == 0.0][:heldout_seqs]
    heldout = results["heldout"]
    assert heldout["n_seqs"] == len(rows) > 0
    assert heldout["n_starts"] == sum(min(starts_per_seq, max(0, len(r["ids"]) - r["prompt_len"] - gamma))
                                      for r in rows) > 0
    reached, tau = 1.0, 1.0
    for g in range(1, gamma + 1):
        reached *= heldout["per_position_acceptance"][g - 1] or 0.0  # None: no start reached position g
        tau += reached
        assert heldout["tau"][g] == pytest.approx(tau)
        assert heldout["tau"][g] == pytest.approx(1 + sum(min(n, g) for n in heldout["lengths"]) / len(heldout["lengths"]))
    assert len(heldout["starts"]) == len(heldout["lengths"]) == heldout["n_starts"]
    for s, t in heldout["starts"]:  # a root in the answer with GAMMA_MAX reference tokens after it
        assert rows[s]["prompt_len"] <= t < len(rows[s]["ids"]) - gamma
    assert max(Counter(s for s, _ in heldout["starts"]).values()) <= starts_per_seq
    assert heldout["sequences_sha"] == train_eval.sequences_sha([r["ids"] for r in rows])
    cost = results["cost"]
    assert cost["ratio"] == pytest.approx(cost["draft_forward_ms"] / cost["target_forward_ms"])


def build_recipe(name: str, target=None, *overrides: str, vocab=tuple(range(128))):
    """A recipe of conf/train/<name>.yaml on the tiny pair (the trainable parameters it starts with), with
    overrides; target: the tiny pair's target, loaded when not given."""
    with initialize_config_dir(str(REPO / "conf" / "train"), version_base="1.3"):
        cfg = compose(config_name=name, overrides=["pair=tiny", *overrides])
    if target is None:
        target = load_pair(group_config("pair", "tiny"), drafter_cls=None).target
    return RECIPES[name](cfg, target, list(vocab))


def test_eagle_init_from_goes_on_from_a_trained_head_and_refuses_a_misfit(tmp_path):
    """init_from loads a head folder's weights as the start (not the identity init), and refuses a head whose
    layer count or drafting vocabulary differs from the run's, with one error line."""
    from svbench.errors import SvbenchError
    from svbench.nets.eagle import save_head
    target = load_pair(group_config("pair", "tiny"), drafter_cls=None).target
    fresh = build_recipe("eagle", target).module.state_dict()
    trained = build_recipe("eagle", target).module
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(torch.randn_like(p) * 0.01)  # anything but the fresh head's identity start
    save_head(trained, tmp_path / "head")

    def recipe(vocab, *overrides):
        return build_recipe("eagle", target, f"init_from={tmp_path / 'head'}", *overrides, vocab=vocab)

    resumed = recipe(list(range(128))).module.state_dict()
    assert resumed.keys() == trained.state_dict().keys()
    assert all(torch.equal(resumed[k], v.to(torch.bfloat16).to(v.dtype))  # draft folders store bf16
               for k, v in trained.state_dict().items())
    assert not torch.equal(fresh["fc.weight"], resumed["fc.weight"])
    with pytest.raises(SvbenchError, match="drafting vocabulary differs"):
        recipe(list(range(1, 129)))
    with pytest.raises(SvbenchError, match="has 1 layer"):
        recipe(list(range(128)), "num_layers=2")


def test_glide_init_from_starts_its_layers_from_a_draft_lm_folder(tmp_path):
    """GliDe's init_from copies a trained draft LM's self-attention and MLP into the draft (not the target's
    first layer); a missing folder is one error line."""
    from svbench.draft_lm import draft_from_target, save_draft
    from svbench.errors import SvbenchError
    target = load_pair(group_config("pair", "tiny"), drafter_cls=None).target
    lm = draft_from_target(target, 1, [2])  # the target's last layer, so it differs from the default start
    save_draft(lm, tmp_path / "lm")

    def glide(folder):
        return build_recipe("glide", target, f"init_from={folder}").module

    mlp = glide(tmp_path / "lm").model.layers[0].mlp.down_proj.weight
    assert torch.equal(mlp, lm.model.layers[0].mlp.down_proj.weight.to(torch.bfloat16).to(mlp.dtype))
    assert not torch.equal(mlp, build_recipe("glide", target).module.model.layers[0].mlp.down_proj.weight)
    with pytest.raises(SvbenchError, match="init_from=.*no such folder"):
        glide(tmp_path / "missing")


recipe_title = {"glide": "GliDe draft", "eagle": "EAGLE head", "eagle3": "EAGLE-3 head"}


@pytest.mark.slow
@pytest.mark.parametrize("recipe, role, method", [("glide", "glide", "glide_cape"), ("eagle", "eagle", "eagle2"),
                                                   ("eagle3", "eagle3", "eagle3")])
def test_glide_and_eagle_recipes_train_resume_export_and_load(tiny_data, tmp_path, recipe, role, method):
    out, export = tmp_path / "ckpt", tmp_path / recipe
    cmd = [sys.executable, "-m", "svbench.train", f"--config-name={recipe}", "pair=tiny", f"data={tiny_data}",
           f"out={out}", "batch_size=2", "reduced_vocab=128", "save_every=2", "seq_len=64", "warmup_steps=1"]
    first = subprocess.run(cmd + ["steps=2"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    second = subprocess.run(cmd + ["steps=3", f"export={export}"], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert second.returncode == 0, second.stderr
    assert "resumed from" in second.stderr
    trainable = {n for n, p in build_recipe(recipe).module.named_parameters() if p.requires_grad}
    assert trainable <= set(torch.load(out / "state.pt", weights_only=False)["draft"])  # a resume loses no weight
    if recipe in ("eagle", "eagle3"):  # a state from before session 28, whose config carried an unused num_layers: 2
        state = torch.load(out / "state.pt", weights_only=False)
        state["config"]["num_layers"] = 2
        torch.save(state, out / "state.pt")
        old = subprocess.run(cmd + ["steps=4"], cwd=REPO, capture_output=True, text=True, timeout=300)
        assert old.returncode == 0 and "resumed from" in old.stderr, old.stderr  # its weights say 1 layer
        deeper = subprocess.run(cmd + ["steps=5", "num_layers=2"], cwd=REPO, capture_output=True, text=True,
                                timeout=300)
        assert deeper.returncode == 2 and "'num_layers': (1, 2)" in deeper.stderr.strip().splitlines()[-1]
    assert json.loads((export / "train_meta.json").read_text())["recipe"] == recipe
    config = json.loads((export / "config.json").read_text())
    assert config["svbench_format"] == {"glide": "glide-draft", "eagle": "eagle-head", "eagle3": "eagle3-head"}[recipe]
    wrong = subprocess.run([sys.executable, "-m", "svbench.train", "--config-name=draft_lm", "pair=tiny",
                            f"data={tiny_data}", f"out={out}", "steps=4"], cwd=REPO, capture_output=True, text=True,
                           timeout=300)
    assert wrong.returncode == 2 and f"written by recipe '{recipe}'" in wrong.stderr  # never resume across recipes
    pair = load_pair({"name": "t", "target": {"source": "tiny", "seed": 0, "vocab_size": 512, "hidden_size": 64,
                                               "num_layers": 3, "num_heads": 4, "num_kv_heads": 2},
                      role: {"source": "trained", "path": str(export)}},
                     drafter_cls=drafter_class(group_config("method", method)))
    if recipe == "eagle3":  # the draft vocabulary travels as d2t in the weights, as in the official format
        assert not (export / "vocab_subset.json").exists()
        assert len(pair.network.vocab_ids) == config["draft_vocab_size"] <= 128
    else:
        assert pair.network.vocab_ids == json.loads((export / "vocab_subset.json").read_text())
    drafter = build_drafter({"method": group_config("method", method)}, pair)
    prompt = build_prompt(pair.tokenizer, "chat", ["hello"], [])
    assert generate(pair.target, prompt, 20, drafter, FixedPolicy(3)).ids == generate(pair.target, prompt, 20).ids
    results = train_eval.run(Namespace(pair="tiny", method=method, draft=str(export), layercut=None, data=str(tiny_data),
                                       heldout_seqs=4, spec_bench=0, starts_per_seq=2, full_vocab=False,
                                       dtype="float32", out=str(tmp_path / "eval.json"), seed=0))
    assert results["kind"] == role
    check_eval_results(results, tiny_data, heldout_seqs=4, starts_per_seq=2)
    train_eval.write_card(export, results, "python -m svbench.train.eval ...")
    assert recipe_title[recipe] in (export / "README.md").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["-m", "svbench.train", "pair=tiny", "data=/nonexistent"], "has no manifest.json"),
    (["-m", "svbench.train", "pair=nope"], "pair='nope' is not one of"),
    (["-m", "svbench.train", "pair=tiny", "recipe=lora"], "recipe='lora' is not one of"),
    (["-m", "svbench.train.data", "--pair", "tiny", "--out", "{tmp}/d", "--temperatures", "hot"], "--temperatures 'hot'"),
    (["-m", "svbench.train.data", "--pair", "tiny", "--out", "{tmp}/d", "--num-prompts", "0"], "num-prompts >= 1"),
    (["-m", "svbench.train.eval", "--pair", "tiny", "--method", "glide", "--draft", "/nonexistent"], "no such folder"),
])
def test_training_clis_answer_bad_input_with_one_line(tmp_path, data_dir, args, message):
    result = subprocess.run([sys.executable, *[a.replace("{tmp}", str(tmp_path)) for a in args]], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and message in result.stderr


# measured (60 full-batch AdamW steps, lr 1e-2, 1 thread, ~0.5 s each): final/initial loss 0.66 (draft_lm and glide:
# soft CE, floored by the target's entropy H(p)), 0.0003 (draft_lm with hard labels), 0.25 (eagle, 4 unrolled
# steps); final top-1 agreement 0.95, 1.0, 0.92
MEMORISE = {  # name: (recipe, overrides, max loss ratio, min top-1)
    "draft_lm": ("draft_lm", [], 0.75, 0.9), "draft_lm_hard": ("draft_lm", ["soft_labels=false"], 0.01, 1.0),
    "glide": ("glide", [], 0.75, 0.9), "eagle": ("eagle", [], 0.4, 0.7),
}


@pytest.mark.parametrize("name", sorted(MEMORISE))
def test_recipes_memorise_a_tiny_set(name):
    """Each recipe's loss falls by a stated margin, and its top-1 agreement with the target rises to a stated
    level, on 4 target-written sequences seen 60 times (in-process, no subprocess: seconds)."""
    import torch
    from hydra import compose, initialize_config_dir

    from svbench.models import tiny_llama
    from svbench.train.__main__ import make_batch
    from svbench.train.recipes import RECIPES

    recipe, overrides, max_ratio, min_top1 = MEMORISE[name]
    target = tiny_llama(num_layers=3, seed=0)
    gen = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(4):
        prompt = torch.randint(0, 256, (6,), generator=gen).tolist()
        rows.append({"ids": prompt + generate(target, prompt, 24).ids, "prompt_len": 6})
    ids, attention, answer = make_batch(rows, 64, 0)
    layers = [] if recipe == "eagle" else ["num_layers=1", "init_layers=[0]"]
    with initialize_config_dir(config_dir=str(REPO / "conf" / "train"), version_base="1.3"):
        cfg = compose(config_name=recipe, overrides=layers + overrides)
    torch.manual_seed(0)
    trainer = RECIPES[recipe](cfg, target, None)

    def evaluate():
        trainer.module.eval()
        with torch.no_grad():
            loss, top1, n_tokens = trainer.loss(ids, attention, answer, keys=list(range(4)))
        assert n_tokens == 4 * 24  # every answer token is a training position
        return float(loss), top1

    before, _ = evaluate()
    optimiser = torch.optim.AdamW([p for p in trainer.module.parameters() if p.requires_grad], lr=1e-2)
    trainer.module.train()
    for _ in range(60):
        loss, _, _ = trainer.loss(ids, attention, answer, keys=list(range(4)))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    after, top1 = evaluate()
    assert after <= max_ratio * before, (before, after)
    assert top1 >= min_top1, top1


@pytest.mark.parametrize("num_layers", [1, 2])
def test_training_time_test_unroll_equals_drafting_a_chain(num_layers):
    """Step j of the unrolled head at position t equals drafting j tokens past x_{t+1} with a KV cache, as the
    drafter does: context f_0..f_t from the target, then the head's own outputs (one query per step); for the
    official 1-layer head and a 2-layer one."""
    import torch
    from transformers import DynamicCache

    from svbench.models import tiny_llama
    from svbench.nets.eagle import head_from_target
    from svbench.train.recipes import training_time_test_mask, unrolled_head

    target = tiny_llama(num_layers=2)
    head = head_from_target(target, num_layers=num_layers)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in head.parameters():  # leave the identity start: every part of the head must matter
            p.add_(torch.randn_like(p) * 0.1)
    ids = torch.randint(3, 500, (2, 14))
    features = target.model(input_ids=ids).last_hidden_state.detach()  # (2, 14, d)
    steps = 4
    with torch.no_grad():
        unrolled = list(unrolled_head(head, ids[:, 1:], features[:, :-1], steps))  # each (2, 13, d)
        for t in (0, 4, 8):
            cache = DynamicCache()
            out = head(ids[:, 1:t + 2], features[:, :t + 1], torch.arange(t + 1)[None].expand(2, -1), cache=cache)
            feature = out[:, t:t + 1]
            torch.testing.assert_close(feature[:, 0], unrolled[0][:, t])
            for j in range(1, steps):
                feature = head(ids[:, t + j + 1: t + j + 2], feature, torch.full((2, 1), t + j), cache=cache)
                torch.testing.assert_close(feature[:, 0], unrolled[j][:, t], atol=1e-4, rtol=1e-4)
    mask = training_time_test_mask(3, 2)[0, 0].int().tolist()
    assert mask == [[1, 0, 0, 1, 0, 0, 1, 0, 0], [1, 1, 0, 0, 1, 0, 0, 1, 0], [1, 1, 1, 0, 0, 1, 0, 0, 1]]


def test_eval_drafts_without_autograd():
    """train.eval drafts under inference mode: with autograd on, the EAGLE head's cache kept every start's graph
    alive (the target's prefill included) and a 40-answer eval ran out of memory."""
    import random

    import torch

    cls = drafter_class(group_config("method", "eagle2"))
    pair = load_pair(group_config("pair", "tiny"), "float32", "cpu", drafter_cls=cls)
    drafter = cls.from_pair(pair)
    seen = []
    original = drafter.get_candidates

    def spy(*args, **kwargs):
        seen.append(torch.is_grad_enabled())
        tree = original(*args, **kwargs)
        assert tree.device_arrays is None or not tree.device_arrays.requires_grad
        return tree

    drafter.get_candidates = spy
    ids = list(range(3, 40))
    starts, lengths = train_eval.accepted_lengths(drafter, [(ids, 5)], 3, random.Random(0), pair.target)
    assert len(lengths) == 3 and seen == [False] * 3 and [s for s, _ in starts] == [0, 0, 0]


@pytest.mark.slow
def test_resumed_run_on_grown_data_keeps_its_drafting_vocabulary(tiny_data, tmp_path):
    """Continuing a run on more data (the generator added shards) must not re-pick the reduced vocabulary:
    the head's rows were trained for the state's tokens. The data manifests of the run's history are listed."""
    more = tmp_path / "more"
    train_data.run(data_args(more, seed=1, num_prompts=16, max_new_tokens=24, temperatures="1.0"))
    out, export = tmp_path / "ckpt", tmp_path / "draft"
    cmd = [sys.executable, "-m", "svbench.train", "pair=tiny", f"out={out}", "batch_size=2", "num_layers=1",
           "init_layers=[0]", "reduced_vocab=16", "save_every=2", "seq_len=64", "warmup_steps=1", f"export={export}"]
    first = subprocess.run(cmd + [f"data={tiny_data}", "steps=2"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    vocab = json.loads((export / "vocab_subset.json").read_text())
    rows = [r for d in (tiny_data, more) for r in train_data.read_shards(d, split="train")]
    pair = load_pair(group_config("pair", "tiny"), drafter_cls=None)
    assert top_tokens(rows, 16, pair.eos_token_ids) != vocab  # the grown data alone would pick other tokens
    second = subprocess.run(cmd + [f"data=[{tiny_data},{more}]", "steps=4"], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert second.returncode == 0, second.stderr
    assert "at step 2" in second.stderr and "the data changed" in second.stderr
    assert json.loads((export / "vocab_subset.json").read_text()) == vocab
    meta = json.loads((export / "train_meta.json").read_text())
    hashes = [json.loads((d / "manifest.json").read_text())["hash"] for d in (tiny_data, more)]
    assert meta["steps"] == 4 and meta["data_manifest_hashes"] == [hashes[0], "+".join(hashes)]
    results = train_eval.run(Namespace(pair="tiny", draft=str(export), layercut=None, data=str(tiny_data),
                                       heldout_seqs=2, spec_bench=0, starts_per_seq=2, full_vocab=False,
                                       dtype="float32", out=str(tmp_path / "eval.json"), seed=0))
    train_eval.write_card(export, results, "python -m svbench.train.eval ...")
    card = (export / "README.md").read_text()
    assert f"earlier steps saw the data of manifest(s) {hashes[0]})" in card
    assert "its cosine was re-stretched: 2 steps from step 0, 4 steps from step 2)" in card


def test_draft_candidate_script_answers_bad_arguments_with_one_line(tmp_path):
    """experiments/draft_candidate.sh checks its arguments before any model loads: one line, exit status 2."""
    draft = str(REPO / "drafts" / "smollm2-135m-draft-lm")
    for args, env, message in (([], {}, "usage: bash experiments/draft_candidate.sh"),
                               (["lora", draft, "x"], {}, "unknown KIND 'lora'"),
                               (["draft_lm", draft, "a/b"], {}, "NAME 'a/b': letters, digits"),
                               (["draft_lm", draft, "x"], {"LIMIT": "0"}, "LIMIT '0': a positive integer"),
                               (["draft_lm", draft, "x"], {"FIXED": "2"}, "FIXED '2': 0 or 1"),
                               (["draft_lm", str(tmp_path), "x"], {}, f"no draft at '{tmp_path}'")):
        done = subprocess.run(["bash", "experiments/draft_candidate.sh", *args], cwd=REPO, capture_output=True,
                              text=True, env={**os.environ, **env}, timeout=30)
        assert done.returncode == 2 and message in done.stderr and done.stderr.count("\n") == 1, (args, done.stderr)


def test_target_pass_marks_where_the_target_top1_is_in_the_draft_vocabulary():
    """With vocab_member, TargetPass returns per position whether the target's full-vocabulary argmax lies in
    the draft vocabulary (False on padding), computed once per row (cached with the features)."""
    from svbench.train.recipes import TargetPass
    target = load_pair(group_config("pair", "tiny"), drafter_cls=None).target
    ids = torch.randint(0, 512, (2, 12), generator=torch.Generator().manual_seed(1))
    attention = torch.ones_like(ids)
    attention[1, 9:] = 0  # row 1 is 9 tokens long
    member = torch.zeros(512, dtype=torch.bool)
    member[::3] = True
    target_pass = TargetPass(target, vocab_member=member)
    _, _, _, inside = target_pass.batch(["a", "b"], ids, attention)
    with torch.no_grad():
        top1 = torch.zeros(2, 12, dtype=torch.long)  # each row alone, unpadded: the full-vocabulary argmax
        for b, n in ((0, 12), (1, 9)):
            top1[b, :n] = target(input_ids=ids[b:b + 1, :n]).logits[0].argmax(-1)
    expected = member[top1] & attention.bool()
    assert torch.equal(inside, expected) and 0 < int(inside.sum()) < 21  # both cases occur
    assert torch.equal(target_pass.batch(["a", "b"], ids, attention)[3], inside)  # from the cache
    assert TargetPass(target).batch(["a"], ids[:1], attention[:1])[3] is None  # no mask asked: nothing computed


def mask_case(name: str, ttt_steps: int):
    """The tiny target, a recipe config (ttt_steps for the EAGLE heads), 2 x 12 answer tokens and the target's
    top-1 at each position (2, 12): the setting of the mask_outside_vocab tests."""
    with initialize_config_dir(str(REPO / "conf" / "train"), version_base="1.3"):
        overrides = ["pair=tiny"] + ([f"ttt_steps={ttt_steps}"] if "eagle" in name else [])
        cfg = compose(config_name=name, overrides=overrides)
    target = load_pair(group_config("pair", "tiny"), drafter_cls=None).target
    ids = torch.randint(0, 512, (2, 12), generator=torch.Generator().manual_seed(1))
    attention, answer = torch.ones_like(ids), torch.ones_like(ids, dtype=torch.bool)
    with torch.no_grad():
        top1 = target(input_ids=ids).logits.argmax(-1)  # (2, 12)
    return cfg, target, ids, attention, answer, top1


@pytest.mark.parametrize("name", ["eagle", "eagle3", "draft_lm", "glide"])
def test_mask_outside_vocab_drops_the_soft_ce_where_the_target_top1_is_outside(name):
    """With every position's target top-1 outside the draft vocabulary, mask_outside_vocab leaves the EAGLE
    head only its feature loss and the other drafts (soft CE only) no loss; off, the soft CE counts there
    (renormalised)."""
    cfg, target, ids, attention, answer, top1 = mask_case(name, ttt_steps=2)
    vocab = [v for v in range(512) if v not in set(top1.flatten().tolist())][:128]  # no position's top-1 is in it
    losses, start = {}, RECIPES[name](cfg, target, vocab).module.state_dict()
    ce_weights = (cfg.ce_weight, 0.0) if name == "eagle" else (None,)
    for mask in (False, True):
        for ce in ce_weights:
            change = {"mask_outside_vocab": mask, **({} if ce is None else {"ce_weight": ce})}
            recipe = RECIPES[name](OmegaConf.merge(cfg, change), target, vocab)
            recipe.module.load_state_dict(start)  # the same draft for every setting
            recipe.module.eval()  # no feature noise
            torch.manual_seed(0)
            losses[mask, ce] = float(recipe.loss(ids, attention, answer, keys=["a", "b"])[0].detach())
    if name == "eagle":
        assert losses[True, cfg.ce_weight] == pytest.approx(losses[False, 0.0])  # the feature loss alone
        assert losses[False, cfg.ce_weight] > losses[False, 0.0] + 1e-3
    else:  # no feature loss: nothing left
        ce = ce_weights[0]
        assert losses[True, ce] == 0.0 and losses[False, ce] > 0.1


@pytest.mark.parametrize("name", ["eagle", "eagle3", "draft_lm", "glide"])
def test_mask_outside_vocab_keeps_exactly_the_positions_whose_target_top1_is_inside(name, monkeypatch):
    """With a vocabulary holding the target's top-1 at some positions and not others, the soft CE of each
    (unrolled) step keeps exactly the rows of the unmasked run whose target top-1 is in the vocabulary: position
    t for the draft LM and GliDe (predicting t + 1), position t + j + 1 at step j for the EAGLE heads."""
    import svbench.train.recipes as recipes
    cfg, target, ids, attention, answer, top1 = mask_case(name, ttt_steps=3)
    seen = sorted(set(top1.flatten().tolist()))
    vocab = seen[::2] + [v for v in range(512) if v not in seen][:100]  # half the top-1 tokens are inside
    inside = torch.isin(top1, torch.tensor(vocab))  # (2, 12)
    assert 0 < int(inside.sum()) < inside.numel()
    calls = {}
    real = recipes.soft_cross_entropy

    def recording(draft_logits, target_probs, keep=None):
        calls[mask].append((target_probs.detach().clone(), keep))
        return real(draft_logits, target_probs, keep)
    monkeypatch.setattr(recipes, "soft_cross_entropy", recording)
    start = RECIPES[name](cfg, target, vocab).module.state_dict()
    for mask in (False, True):
        calls[mask] = []
        recipe = RECIPES[name](OmegaConf.merge(cfg, {"mask_outside_vocab": mask}), target, vocab)
        recipe.module.load_state_dict(start)
        recipe.module.eval()
        recipe.loss(ids, attention, answer, keys=["a", "b"])
    assert len(calls[True]) == len(calls[False]) == (3 if "eagle" in name else 1)
    for j, ((full, no_keep), (probs, keep)) in enumerate(zip(calls[False], calls[True])):
        if "eagle" in name:  # step j: rows are positions t < T - 1 - j, their target is position t + j + 1
            where = recipes.shifted(answer[:, 1:], j)
            expected = recipes.shifted(inside[:, 1:], j)[where]
        else:  # rows are positions t < T - 1, their target is position t's distribution over t + 1
            expected = inside[:, :-1][answer[:, 1:]]
        assert no_keep is None and full.shape[0] == expected.numel(), j
        assert torch.equal(probs, full) and torch.equal(keep, expected), j


def test_soft_cross_entropy_is_the_mean_over_kept_rows_of_the_cross_entropy_to_the_target():
    """-sum_v p(v) log q(v) per row, averaged over the kept rows only (weights, not a gather); no kept row: 0
    with a gradient path; its gradient is softmax(d) - p per kept row / kept count."""
    from svbench.train.recipes import soft_cross_entropy
    g = torch.Generator().manual_seed(0)
    d, p = torch.randn(6, 40, generator=g) * 3, torch.softmax(torch.randn(6, 40, generator=g) * 2, -1)
    keep = torch.tensor([True, False, True, True, False, True])
    per_row = -(p * torch.log_softmax(d, -1)).sum(-1)  # (6,)
    assert float(soft_cross_entropy(d, p)) == pytest.approx(float(per_row.mean()), rel=1e-5)
    logits = d.clone().requires_grad_()
    loss = soft_cross_entropy(logits, p, keep)
    assert float(loss.detach()) == pytest.approx(float(per_row[keep].mean()), rel=1e-5)
    loss.backward()
    expected = (torch.softmax(d, -1) - p) * keep[:, None] / int(keep.sum())
    assert torch.allclose(logits.grad, expected, atol=1e-6)
    half = d.bfloat16().requires_grad_()  # bf16 logits: float32 inside, the gradient back in bf16
    soft_cross_entropy(half, p, keep).backward()
    assert half.grad.dtype == torch.bfloat16 and torch.allclose(half.grad.float(), expected, atol=1e-2)
    poisoned = d.clone()
    poisoned[1] = float("inf")  # a dropped row's non-finite logits stay out of the mean
    assert float(soft_cross_entropy(poisoned, p, keep)) == pytest.approx(float(per_row[keep].mean()), rel=1e-5)
    none = soft_cross_entropy(logits, p, torch.zeros(6, dtype=torch.bool))
    assert float(none.detach()) == 0.0 and none.requires_grad
    assert float(soft_cross_entropy(logits[:0], p[:0]).detach()) == 0.0


def test_mask_outside_vocab_must_be_a_boolean():
    from svbench.errors import SvbenchError
    from svbench.train.__main__ import train
    with initialize_config_dir(str(REPO / "conf" / "train"), version_base="1.3"):
        cfg = compose(config_name="eagle", overrides=["pair=tiny", "mask_outside_vocab=maybe"])
    with pytest.raises(SvbenchError, match=r"^mask_outside_vocab='maybe': expected true or false$"):
        train(cfg)  # refused before any model or data is read


def test_keep_freed_memory_must_be_a_boolean():
    from svbench.errors import SvbenchError
    from svbench.train.__main__ import train
    with initialize_config_dir(str(REPO / "conf" / "train"), version_base="1.3"):
        cfg = compose(config_name="eagle", overrides=["pair=tiny", "keep_freed_memory=sometimes"])
    with pytest.raises(SvbenchError, match=r"^keep_freed_memory='sometimes': expected true or false$"):
        train(cfg)  # refused before any model or data is read


def test_eval_spec_bench_starts_do_not_depend_on_the_heldout_count(tiny_data, tmp_path):
    """Each eval set draws its starts from its own generator: more held-out answers leave the Spec-Bench
    starts (and so the paired comparison of two drafts on them) unchanged."""
    spec = {}
    for n in (1, 3):
        results = train_eval.run(Namespace(pair="tiny", draft=None, layercut=1, data=str(tiny_data), heldout_seqs=n,
                                           spec_bench=6, starts_per_seq=2, full_vocab=False, dtype="float32",
                                           out=str(tmp_path / f"eval{n}.json"), seed=0))
        assert results["heldout"]["n_seqs"] == n
        spec[n] = results["spec_bench"]
    assert spec[1]["starts"] == spec[3]["starts"] and spec[1]["lengths"] == spec[3]["lengths"]
    assert 0 < len(spec[1]["starts"]) <= 12  # 6 first turns x up to 2 starts (short answers have fewer)


def test_attention_is_a_speed_knob_of_data_generation_not_a_setting(tiny_data, monkeypatch, tmp_path):
    """--attention picks the target's attention path while generating (default sdpa, results/datagen_speed.md);
    like the batch size it is not part of what a folder holds, so a folder grows under another path."""
    assert train_data.parser().parse_args(["--out", "x"]).attention == train_data.DATA_ATTENTION == "sdpa"
    assert "attention" not in train_data.DATA_SETTINGS
    asked = []

    def recording(*args, **kwargs):
        asked.append(kwargs.get("attention"))
        return load_pair(*args, **kwargs)
    monkeypatch.setattr(train_data, "load_pair", recording)
    train_data.run(data_args(tiny_data, attention="eager"))  # the same settings: nothing to do, no refusal
    assert asked == ["eager"]  # the path reaches the target
    knobs = {"attention": "sdpa", "threads": torch.get_num_threads(), "batch_size": 4, "max_batch_tokens": 32768,
             "prefill_group": 3}
    manifest = json.loads((tiny_data / "manifest.json").read_text())
    assert [s["generation"] for s in manifest["shards"]] == [knobs] * 3  # each shard records how it was made
    train_data.run(data_args(tmp_path / "eager", num_prompts=6, attention="eager", batch_size=2))
    (tmp_path / "eager" / "shard-00000.parquet").unlink()
    train_data.run(data_args(tmp_path / "eager", num_prompts=6))  # shard 0 regenerated under other knobs
    shards = json.loads((tmp_path / "eager" / "manifest.json").read_text())["shards"]
    assert [s["generation"] for s in shards] == [knobs, {**knobs, "attention": "eager", "batch_size": 2}]
    (tmp_path / "eager" / "shard-00001.parquet").unlink()
    train_data.run(data_args(tmp_path / "eager", num_prompts=6, attention="auto"))  # recorded as resolved
    shards = json.loads((tmp_path / "eager" / "manifest.json").read_text())["shards"]
    assert shards[1]["generation"]["attention"] == "svbench_sdpa"  # auto in float32 (svbench.attention)
    train_data.run(data_args(tmp_path / "eager", num_prompts=12, batch_size=3))  # short shard 1 regenerated, 2 added
    shards = json.loads((tmp_path / "eager" / "manifest.json").read_text())["shards"]
    assert [s["prompts"] for s in shards] == [4, 4, 4]
    assert [s["generation"]["batch_size"] for s in shards] == [4, 3, 3]  # the full shard keeps its own knobs
    bad = subprocess.run([sys.executable, "-m", "svbench.train.data", "--out", str(tiny_data), "--attention", "x"],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "argument --attention: invalid choice: 'x'" in bad.stderr


@pytest.mark.parametrize("script, args, message", [
    ("datagen_profile.py", ["--batch-size", "0"], "--batch-size and --max-batch-tokens: integers >= 1"),
    ("datagen_profile.py", ["--attention", "x"], "argument --attention: invalid choice"),
    ("datagen_attention_ab.py", ["--paths", "sdpa"], "--paths: two of"),
    ("datagen_attention_ab.py", ["--chunk", "0"], "--chunk and --max-new-tokens: integers >= 1"),
    ("attention_forward_cpu.py", ["--lengths", "1,x"], "--lengths: positive integers separated by commas"),
    ("attention_forward_cpu.py", ["--rounds", "0"], "--rounds and --reps: integers >= 1"),
    ("train_step_profile.py", ["--batches", "1"], "--batches: an integer >= 2"),
    ("train_step_profile.py", ["--config", "lora"], "argument --config: invalid choice"),
    ("train_step_profile.py", ["mask_outside_vocab=maybe"], "mask_outside_vocab='maybe': expected true or false"),
])
def test_profiling_experiments_refuse_bad_arguments_with_one_line(script, args, message):
    done = subprocess.run([sys.executable, str(REPO / "experiments" / script), *args], cwd=REPO / "experiments",
                          capture_output=True, text=True, timeout=120)
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 2 and message in last and "Traceback" not in done.stderr, done.stderr


def test_train_step_speed_pairs_versions_only_on_the_same_batches(tiny_data, tmp_path):
    """experiments/train_step_speed.py runs each version in its own process on the loop's batches: versions
    that draw the same batches are paired step by step, a version drawing others (length_group) is compared
    by real tokens per second only; the heap column says whether keep_freed_memory ran."""
    out = tmp_path / "speed"
    done = subprocess.run([sys.executable, "experiments/train_step_speed.py", "--code", f"a={REPO}",
                           "--code", f"b={REPO}:heap", "--code", f"c={REPO}", "--version-override", "c=length_group=2",
                           "--override", "pair=tiny", "--override", f"data={tiny_data}", "--override", "batch_size=2",
                           "--override", "ttt_steps=2", "--rounds", "1", "--steps", "3", "--warmup", "0",
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = {r["version"]: r for r in json.loads(out.with_suffix(".json").read_text())["rows"]}
    assert [rows[v]["heap"] for v in "abc"] == ["kept", "glibc default", "kept"]
    assert rows["a"]["paired_speedup_vs_base"] == 1.0 and rows["b"]["paired_speedup_vs_base"] > 0
    assert rows["c"]["paired_speedup_vs_base"] is None and rows["c"]["overrides"] == ["length_group=2"]
    assert all(len(r["seconds"]) == 3 and 0 < r["real_token_fraction"] <= 1 for r in rows.values())
    assert "— (other batches)" in out.with_suffix(".md").read_text()
    bad = subprocess.run([sys.executable, "experiments/train_step_speed.py", "--code", f"a={REPO}", "--code",
                          f"b={tmp_path}"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and bad.stderr.strip().splitlines() == [f"--code 'b={tmp_path}': expected NAME=DIR[:heap] "
                                                                       f"with DIR holding svbench/"]


def test_length_group_draws_batches_of_neighbouring_lengths_and_resumes_them(tiny_data, tmp_path):
    """draw_batches: length_group 1 is the old sampler (random.sample of batch_size rows); g > 1 draws g
    batches of distinct rows, each a run of neighbours in length order. A resumed run trains on the batches
    still pending at its save, in order: the same batches as an uninterrupted run."""
    from svbench.train.__main__ import draw_batches
    rows = [{"ids": [0] * n} for n in random.Random(0).sample(range(1, 200), 40)]
    random.seed(3)
    expected = random.sample(range(len(rows)), 4)
    random.seed(3)
    assert draw_batches(rows, 4, 1) == [expected]
    batches = draw_batches(rows, 4, 5)
    flat = [i for b in batches for i in b]
    assert len(batches) == 5 and all(len(b) == 4 for b in batches) and len(set(flat)) == 20
    lengths = sorted(len(rows[i]["ids"]) for i in flat)
    for b in batches:  # each batch is 4 consecutive lengths of the 20 drawn
        own = sorted(len(rows[i]["ids"]) for i in b)
        assert own == lengths[lengths.index(own[0]): lengths.index(own[0]) + 4]
    # a run stopped at step 2 and resumed to step 4 ends with the batches and RNG of one 4-step run
    cmd = [sys.executable, "-m", "svbench.train", "pair=tiny", f"data={tiny_data}", "batch_size=1", "length_group=4",
           "num_layers=1", "init_layers=[0]", "reduced_vocab=128", "save_every=2", "seq_len=64", "warmup_steps=1"]
    ends = []
    for name, parts in (("once", [3]), ("resumed", [2, 3])):
        for steps in parts:
            done = subprocess.run(cmd + [f"out={tmp_path / name}", f"steps={steps}"], cwd=REPO, capture_output=True,
                                  text=True, timeout=300)
            assert done.returncode == 0, done.stderr
        state = torch.load(tmp_path / name / "state.pt", weights_only=False)
        ends.append((state["pending_batches"], state["python_rng"]))
    # 4 drawn at step 0, popped from the end: 2 pending at the step-2 save, one left after step 3 (in the
    # wrong order, the resumed run would pop the other)
    assert ends[0] == ends[1] and len(ends[0][0]) == 1
    bad = subprocess.run(cmd + [f"out={tmp_path / 'bad'}", "steps=1", "length_group=0"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].endswith("length_group=0: expected an integer >= 1")


def test_source_weights_draw_a_dataset_more_often_and_name_bad_weights_in_one_line(tiny_data, tmp_path):
    """row_weights + draw_batches: of two equal datasets, the one weighted 9 fills ~90% of the draws (50% when
    the weights are ignored), rows distinct within a draw; no weights is None (the unweighted stream, tested
    above); a dataset the data lacks or a weight <= 0 is one error line, from the CLI too."""
    from svbench.errors import SvbenchError
    from svbench.train.__main__ import draw_batches, row_weights
    rows = [{"ids": [0] * (1 + i % 7), "source": "a/x.jsonl" if i % 2 else "b/y.json"} for i in range(400)]
    assert row_weights(rows, {}) is None
    weights = row_weights(rows, {"b": 9})
    assert sorted(set(weights)) == [1.0, 9.0]
    random.seed(0)
    draws = [[i for batch in draw_batches(rows, 4, 5, weights) for i in batch] for _ in range(50)]
    assert all(len(set(d)) == len(d) == 20 for d in draws)
    share = sum(rows[i]["source"].startswith("b/") for d in draws for i in d) / 1000
    assert 0.85 < share < 0.95, share
    for bad, message in (({"c": 2}, "source_weights.c: no training row comes from it; the data's sources: ['a', 'b']"),
                         ({"b": 0}, "source_weights.b=0: expected a number > 0"),
                         ({"b": True}, "source_weights.b=True: expected a number > 0")):
        with pytest.raises(SvbenchError) as caught:
            row_weights(rows, bad)
        assert str(caught.value) == message
    done = subprocess.run([sys.executable, "-m", "svbench.train", "pair=tiny", f"data={tiny_data}", "steps=1",
                           f"out={tmp_path / 'w'}", "source_weights={nowhere:2}"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and "source_weights.nowhere: no training row comes from it" in \
        done.stderr.strip().splitlines()[-1]
    source = ast.literal_eval(done.stderr.strip().splitlines()[-1].split("the data's sources: ")[1])[0]
    scalar = subprocess.run([sys.executable, "-m", "svbench.train", "pair=tiny", f"data={tiny_data}", "steps=1",
                             f"out={tmp_path / 's'}", "source_weights=5"], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert scalar.returncode == 2 and scalar.stderr.strip().splitlines()[-1].endswith(
        "source_weights=5: expected {dataset: weight}, e.g. 'source_weights={ud_german:4}'")
    done = subprocess.run([sys.executable, "-m", "svbench.train", "pair=tiny", f"data={tiny_data}", "steps=1",
                           "length_group=4", "batch_size=1", "num_layers=1", "init_layers=[0]", "reduced_vocab=128",
                           "seq_len=64", "warmup_steps=1", f"out={tmp_path / 'w'}", f"source_weights={{{source}:2}}"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    state = torch.load(tmp_path / "w" / "state.pt", weights_only=False)
    assert state["pending_drawn_with"]["source_weights"] == {source: 2} and len(state["pending_batches"]) == 3


def test_unrolled_soft_labels_are_the_targets_distribution_at_the_shifted_positions():
    """Step j's rows: the target's distribution and mask flag at position t + j + 1 for every t with answer
    at t + j + 1, exactly as shifting the features and computing it per step (with gaps and padding)."""
    from svbench.train.recipes import UnrolledSoftLabels, shifted, target_distribution
    g = torch.Generator().manual_seed(0)
    hidden, head = torch.randn(3, 9, 8, generator=g), torch.randn(20, 8, generator=g)
    answered = torch.rand(3, 9, generator=g) > 0.3
    answered[2, 6:] = False  # a padded tail
    inside = torch.rand(3, 9, generator=g) > 0.5
    labels = UnrolledSoftLabels(hidden, answered, head, inside)
    for j in range(5):
        where = shifted(answered, j)
        probs, keep = labels.step(j, where)
        assert torch.allclose(probs, target_distribution(shifted(hidden, j)[where], head)), j
        assert torch.equal(keep, shifted(inside, j)[where]), j


def old_soft_cross_entropy(draft_logits, target_logits):
    """The soft CE before session 27 (autograd's log_softmax chain on gathered rows): the reference."""
    if draft_logits.shape[0] == 0:
        return draft_logits.float().sum()
    return -(torch.softmax(target_logits.float(), -1) * torch.log_softmax(draft_logits.float(), -1)).sum(-1).mean()


@pytest.mark.parametrize("name", ["eagle", "eagle3"])
def test_unrolled_losses_and_gradients_match_the_per_step_reference(name):
    """The EAGLE heads' loss (shared soft labels, rows weighted by the mask) equals, with its gradients, the
    per-step computation it replaced: each step's target logits from the shifted features, kept rows
    gathered, autograd's log-softmax (answers with gaps, a padded row, mask_outside_vocab)."""
    import torch.nn.functional as F
    from svbench.train.recipes import shifted, unrolled_head
    cfg, target, ids, attention, answer, top1 = mask_case(name, ttt_steps=3)
    attention[1, 9:] = 0
    answer = answer & attention.bool()
    answer[0, 4:6] = False  # a gap: prompt-like positions inside the row
    seen = sorted(set(top1.flatten().tolist()))
    vocab = seen[::2] + [v for v in range(512) if v not in seen][:100]
    recipe = RECIPES[name](OmegaConf.merge(cfg, {"mask_outside_vocab": True}), target, vocab)
    recipe.module.eval()  # no feature noise
    params = [q for q in recipe.module.parameters() if q.requires_grad]
    loss = recipe.loss(ids, attention, answer, keys=["a", "b"])[0]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    hidden, _, fused, inside = recipe.target_pass.batch(["a", "b"], ids, attention)
    hidden = hidden.float()
    inputs = hidden[:, :-1] if name == "eagle" else fused[:, :-1]
    reference = 0.0
    for j, predicted in enumerate(unrolled_head(recipe.module, ids[:, 1:], inputs, 3)):
        where = shifted(answer[:, 1:], j)
        true = shifted(hidden[:, 1:], j)[where]  # (M_j, d)
        keep = shifted(inside[:, 1:], j)[where]
        if name == "eagle":
            head = recipe.module.head_weight.float()
            pred = predicted[where].float()
            draft_logits, target_logits = pred @ head.T, true @ head.T
            step = F.smooth_l1_loss(pred, true) + recipe.ce_weight * old_soft_cross_entropy(draft_logits[keep],
                                                                                            target_logits[keep])
        else:
            draft_logits = recipe.module.logits(predicted[where]).float()
            target_logits = true.to(recipe.target_head.dtype) @ recipe.target_head.T
            step = old_soft_cross_entropy(draft_logits[keep], target_logits[keep])
        reference = reference + 0.8 ** j * step
    assert float(loss.detach()) == pytest.approx(float(reference.detach()), rel=1e-5)
    for got, want in zip(grads, torch.autograd.grad(reference, params, allow_unused=True)):
        assert (got is None) == (want is None)
        if got is not None:
            assert torch.allclose(got, want, rtol=1e-4, atol=1e-6)


def test_train_step_updates_on_answer_tokens_and_leaves_an_empty_batch_alone():
    """train_step (the loop's step, also timed by experiments/train_step_speed.py): a batch with answer tokens
    sets the learning rate and moves the trainable weights; a batch of empty answers returns None and changes
    nothing (the loop counts it and draws the next)."""
    from svbench.models import tiny_llama
    from svbench.train.__main__ import train_step

    target = tiny_llama(num_layers=2, seed=0)
    with initialize_config_dir(config_dir=str(REPO / "conf" / "train"), version_base="1.3"):
        cfg = compose(config_name="eagle", overrides=["seq_len=32", "autocast=float32"])
    torch.manual_seed(0)
    recipe = RECIPES["eagle"](cfg, target, None)
    trainable = [p for p in recipe.module.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(trainable, lr=1.0)
    rows = [{"ids": list(range(10, 30)), "prompt_len": 6}, {"ids": list(range(40, 52)), "prompt_len": 4},
            {"ids": list(range(5, 12)), "prompt_len": 7}]  # the last: an empty answer
    before = [p.detach().clone() for p in trainable]
    assert train_step(recipe, optimiser, trainable, rows, [2], cfg, 0, 1e-3) is None
    assert all(torch.equal(a, p) for a, p in zip(before, trainable)) and optimiser.param_groups[0]["lr"] == 1.0
    loss, top1, n_tokens, attention = train_step(recipe, optimiser, trainable, rows, [0, 1], cfg, 0, 1e-3)
    assert loss > 0 and 0 <= top1 <= 1 and n_tokens > 0 and optimiser.param_groups[0]["lr"] == 1e-3
    assert attention.shape == (2, 20) and int(attention.sum()) == 32
    assert any(not torch.equal(a, p) for a, p in zip(before, trainable))
