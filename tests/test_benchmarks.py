import json

import pytest

from svbench.benchmarks import build_prompt, data_dir, load_benchmark, question_file, read_questions
from svbench.errors import SvbenchError
from svbench.models import tiny_tokenizer

MT_MAP = {c: "mt_bench" for c in ["writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem",
                                  "humanities"]}


def spec_cfg(**kw):
    cfg = {"name": "spec_bench", "path": None, "file": "spec_bench/question.jsonl", "limit": None,
           "categories": None, "turns": "all", "category_map": MT_MAP}
    cfg.update(kw)
    return cfg


def test_spec_bench_has_480_questions_in_6_categories(data_dir):
    questions = load_benchmark(spec_cfg())
    assert len(questions) == 480
    by_cat = {}
    for q in questions:
        by_cat.setdefault(q.category, []).append(q)
    assert sorted(by_cat) == sorted(["mt_bench", "translation", "summarization", "qa", "math_reasoning", "rag"])
    assert all(len(v) == 80 for v in by_cat.values())
    assert all(len(q.turns) == 2 for q in by_cat["mt_bench"])
    assert all(len(q.turns) == 1 for c, v in by_cat.items() if c != "mt_bench" for q in v)


def test_limit_categories_and_first_turns(data_dir):
    questions = load_benchmark(spec_cfg(limit=2, categories=["mt_bench", "qa"]))
    assert [q.category for q in questions] == ["mt_bench", "mt_bench", "qa", "qa"]
    first = load_benchmark(spec_cfg(limit=1, turns="first"))
    assert len(first) == 6 and all(len(q.turns) == 1 for q in first)
    with pytest.raises(SvbenchError, match="unknown \\['nope'\\]"):
        load_benchmark(spec_cfg(categories=["nope"]))
    with pytest.raises(SvbenchError, match="benchmark.limit"):
        load_benchmark(spec_cfg(limit=0))


def test_skip_gives_a_split_disjoint_from_limit(data_dir):
    """skip=4 limit=4 holds each category's questions 5-8: none of limit=4's, the same count, in file order."""
    first = load_benchmark(spec_cfg(limit=4))
    tuning = load_benchmark(spec_cfg(limit=4, skip=4))
    everything = load_benchmark(spec_cfg())
    assert len(tuning) == len(first) == 24
    assert not {q.question_id for q in first} & {q.question_id for q in tuning}
    for cat in {q.category for q in everything}:
        ids = [q.question_id for q in everything if q.category == cat]
        assert [q.question_id for q in tuning if q.category == cat] == ids[4:8]
    assert len(load_benchmark(spec_cfg(skip=78))) == 12  # no limit: the rest of each category
    for bad in (-1, True, 1.5):
        with pytest.raises(SvbenchError, match="benchmark.skip"):
            load_benchmark(spec_cfg(skip=bad))
    with pytest.raises(SvbenchError, match="at most 80"):
        load_benchmark(spec_cfg(skip=80))


def test_mt_bench_long_reads_80_first_turns(data_dir):
    cfg = spec_cfg(name="mt_bench_long", file="mt_bench/question.jsonl", turns="first")
    questions = load_benchmark(cfg)
    assert len(questions) == 80 and all(len(q.turns) == 1 for q in questions)


def test_smoke_is_shipped_in_the_package():
    questions = load_benchmark({"name": "smoke", "path": None, "file": None})
    assert len(questions) >= 5 and any(len(q.turns) == 2 for q in questions)


def test_question_file_is_path_then_svbench_data_then_the_shipped_copy(tmp_path, monkeypatch):
    monkeypatch.delenv("SVBENCH_DATA", raising=False)
    shipped = question_file(spec_cfg())
    assert shipped == data_dir(packaged=True) / "spec_bench/question.jsonl" and shipped.is_file()
    assert len(load_benchmark(spec_cfg())) == 480  # a clone needs nothing beside it
    (tmp_path / "spec_bench").mkdir()
    (tmp_path / "spec_bench/question.jsonl").write_text(shipped.read_text().splitlines()[0] + "\n")
    monkeypatch.setenv("SVBENCH_DATA", str(tmp_path))
    assert question_file(spec_cfg()) == tmp_path / "spec_bench/question.jsonl"
    assert len(load_benchmark(spec_cfg())) == 1
    assert question_file(spec_cfg(path=str(shipped))) == shipped
    monkeypatch.setenv("SVBENCH_DATA", "")  # empty = unset
    assert question_file(spec_cfg()) == shipped


def test_missing_file_and_missing_data_dir(tmp_path, monkeypatch):
    with pytest.raises(SvbenchError, match="does not exist"):
        load_benchmark(spec_cfg(path=str(tmp_path / "none.jsonl")))
    monkeypatch.setenv("SVBENCH_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(SvbenchError, match="nowhere/spec_bench/question.jsonl' does not exist .*SVBENCH_DATA"):
        load_benchmark(spec_cfg())


@pytest.mark.parametrize("bad_line, message", [
    ('{"question_id": 1, "category": "qa", "turns": ["a"]', "line 2: not valid JSON"),
    ('{"question_id": 1, "category": "qa"}', "line 2: missing field"),
    ('{"question_id": 1, "category": "qa", "turns": []}', "line 2: 'turns' must be"),
    ('{"question_id": 1, "category": "qa", "turns": "a question"}', "line 2: 'turns' must be"),
    ('[1, 2]', "line 2: expected a JSON object"),
    ('{"question_id": 0, "category": "qa", "turns": ["dup"]}', "line 2: duplicate question_id"),
])
def test_malformed_question_file_names_the_line(tmp_path, bad_line, message):
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"question_id": 0, "category": "qa", "turns": ["ok"]}) + "\n" + bad_line + "\n")
    with pytest.raises(SvbenchError, match=message):
        read_questions(path)


def test_empty_file(tmp_path):
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(SvbenchError, match="no questions"):
        read_questions(tmp_path / "e.jsonl")


def test_prompt_templates():
    tok = tiny_tokenizer()
    chat = tok.decode(build_prompt(tok, "chat", ["hi", "again"], ["hello"]))
    assert chat == ("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nhello<|im_end|>\n"
                    "<|im_start|>user\nagain<|im_end|>\n<|im_start|>assistant\n")
    assert tok.decode(build_prompt(tok, "raw", ["What?"], [])) == "What?\n"
    vicuna = tok.decode(build_prompt(tok, "vicuna_v1.1", ["Q1", "Q2"], ["A1"]))
    assert vicuna.endswith("USER: Q1 ASSISTANT: A1<|im_end|>USER: Q2 ASSISTANT:")
    with pytest.raises(SvbenchError, match="prompt_template"):
        build_prompt(tok, "alpaca", ["x"], [])
