"""Multi-turn questions (svbench/runner.py): turn t's prompt holds AR's answers to turns < t, for the AR
baseline and for the method alike, so both are timed on identical prompts. In-process runner.run on pair=tiny."""
import json
from pathlib import Path

from hydra import compose, initialize_config_dir

from svbench import runner
from svbench.benchmarks import build_prompt
from svbench.models import tiny_tokenizer

CONF = Path(__file__).resolve().parents[1] / "conf"
TURNS = ["Tell me about the sea.", "Now make it shorter."]


def test_later_turns_are_built_from_ars_answers(tmp_path, monkeypatch):
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"question_id": 7, "category": "writing", "turns": TURNS}) + "\n")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "pair=tiny", "method=vanilla_sd", "policy=fixed", "dtype=float32", f"benchmark.path={questions}",
            "max_new_tokens=16", "temperature=1.0", "warmup=0", "progress=false"])
    calls = []  # (prompt ids, drafter given) of every generation the runner makes
    original = runner.generate

    def spy(target, prompt_ids, max_new_tokens, drafter=None, *args, **kwargs):
        calls.append((list(prompt_ids), drafter is not None))
        return original(target, prompt_ids, max_new_tokens, drafter, *args, **kwargs)

    monkeypatch.setattr(runner, "generate", spy)
    runner.run(cfg, tmp_path / "run")

    records = [json.loads(line) for line in (tmp_path / "run" / "records.jsonl").read_text().splitlines()]
    assert [(r["method"], r["turn"]) for r in records] == [("ar", 0), ("vanilla_sd", 0), ("ar", 1), ("vanilla_sd", 1)]
    ar0, sd0, ar1, sd1 = records
    # sampled (T=1): the method's first answer differs from AR's, so a prompt built from it would differ too
    assert sd0["ids"] != ar0["ids"]
    tok = tiny_tokenizer()
    first = build_prompt(tok, "chat", TURNS[:1], [])
    second = build_prompt(tok, "chat", TURNS, [tok.decode(ar0["ids"], skip_special_tokens=True)])
    from_method = build_prompt(tok, "chat", TURNS, [tok.decode(sd0["ids"], skip_special_tokens=True)])
    assert second != from_method
    assert calls == [(first, False), (first, True), (second, False), (second, True)]
    assert [r["prompt_len"] for r in records] == [len(first), len(first), len(second), len(second)]
