"""Benchmark question files and prompt templates (ALGORITHMS.md §8).

A question file is JSONL with Spec-Bench's schema: one object per line with ``question_id``,
``category`` and ``turns`` (a non-empty list of strings). Files come from ``benchmark.path``, else
from ``$SVBENCH_DATA/<benchmark.file>`` when SVBENCH_DATA is set, else from the copy shipped in the
package, ``svbench/data/<benchmark.file>`` (provenance and licenses in svbench/data/NOTICE.md); smoke
is always the package's own ``svbench/data/smoke.jsonl``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from svbench.errors import SvbenchError

VICUNA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
                 "The assistant gives helpful, detailed, and polite answers to the user's questions.")
PROMPT_TEMPLATES = ("chat", "vicuna_v1.1", "raw")


@dataclass(frozen=True)
class Question:
    question_id: str
    category: str
    turns: tuple[str, ...]


def data_dir(packaged: bool = False) -> Path:
    """The data folder: $SVBENCH_DATA when set (a folder laid out like svbench/data/), else the copy shipped
    in the package, svbench/data/ (see its NOTICE.md); packaged=True always gives the shipped copy."""
    override = os.environ.get("SVBENCH_DATA")
    if override and not packaged:
        return Path(override).expanduser()
    return Path(str(resources.files("svbench") / "data"))


def question_file(bench_cfg) -> Path:
    if bench_cfg.get("path"):
        path, where = Path(bench_cfg["path"]).expanduser(), ""
    elif bench_cfg.get("file"):
        path = data_dir() / bench_cfg["file"]
        where = "; from SVBENCH_DATA, unset it to use svbench/data" if os.environ.get("SVBENCH_DATA") else ""
    else:
        return data_dir(packaged=True) / f"{bench_cfg['name']}.jsonl"
    if not path.is_file():
        raise SvbenchError(f"question file {str(path)!r} does not exist (benchmark={bench_cfg['name']}{where})")
    return path


def read_questions(path: Path, category_map=None) -> list[Question]:
    """Parse a question file; every problem is reported with its line number."""
    category_map = dict(category_map or {})
    questions, seen = [], set()
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path}, line {line_no}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SvbenchError(f"{where}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise SvbenchError(f"{where}: expected a JSON object with question_id, category, turns")
            missing = [k for k in ("question_id", "category", "turns") if k not in row]
            if missing:
                raise SvbenchError(f"{where}: missing field(s) {missing}")
            turns = row["turns"]
            if not isinstance(turns, list) or not turns or not all(isinstance(t, str) and t for t in turns):
                raise SvbenchError(f"{where}: 'turns' must be a non-empty list of non-empty strings")
            qid = str(row["question_id"])
            if qid in seen:
                raise SvbenchError(f"{where}: duplicate question_id {qid!r}")
            seen.add(qid)
            category = str(row["category"])
            questions.append(Question(qid, category_map.get(category, category), tuple(turns)))
    if not questions:
        raise SvbenchError(f"{path}: no questions in the file")
    return questions


def load_benchmark(bench_cfg) -> list[Question]:
    questions = read_questions(question_file(bench_cfg), bench_cfg.get("category_map"))
    wanted = bench_cfg.get("categories")
    if wanted:
        wanted = [wanted] if isinstance(wanted, str) else list(wanted)
        available = sorted({q.category for q in questions})
        unknown = [c for c in wanted if c not in available]
        if unknown:
            raise SvbenchError(f"benchmark.categories: unknown {unknown}; this file has {available}")
        questions = [q for q in questions if q.category in wanted]
    limit, skip = bench_cfg.get("limit"), bench_cfg.get("skip", 0)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise SvbenchError(f"benchmark.limit={limit!r} must be a positive integer or null")
    if isinstance(skip, bool) or not isinstance(skip, int) or skip < 0:
        raise SvbenchError(f"benchmark.skip={skip!r} must be a non-negative integer")
    if limit is not None or skip:  # per category: drop the first `skip` questions, keep the next `limit`
        kept, per_category = [], {}
        for q in questions:
            per_category[q.category] = per_category.get(q.category, 0) + 1
            if skip < per_category[q.category] <= skip + (limit if limit is not None else len(questions)):
                kept.append(q)
        if not kept:
            raise SvbenchError(f"benchmark.skip={skip}: every category has at most {skip} questions")
        questions = kept
    if bench_cfg.get("turns", "all") == "first":
        questions = [Question(q.question_id, q.category, q.turns[:1]) for q in questions]
    return questions


def build_prompt(tokenizer, template: str, user_turns: list[str], answers: list[str]) -> list[int]:
    """Token ids of a conversation: user_turns[i] was answered by answers[i]; the last turn is open."""
    if template == "chat":
        if not getattr(tokenizer, "chat_template", None):
            raise SvbenchError("prompt_template=chat but this tokenizer has no chat template; "
                               "use prompt_template=vicuna_v1.1 or raw")
        messages = []
        for i, turn in enumerate(user_turns):
            messages.append({"role": "user", "content": turn})
            if i < len(answers):
                messages.append({"role": "assistant", "content": answers[i]})
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return tokenizer(text, add_special_tokens=False).input_ids
    if template == "vicuna_v1.1":
        text = VICUNA_SYSTEM + " "
        for i, turn in enumerate(user_turns):
            text += f"USER: {turn} ASSISTANT:"
            if i < len(answers):
                text += f" {answers[i]}{tokenizer.eos_token or ''}"
        return tokenizer(text).input_ids
    if template == "raw":  # SVIP's base-model variant: turns[0] + "\n"
        text = "".join(f"{turn}\n" + (f"{answers[i]}\n" if i < len(answers) else "")
                       for i, turn in enumerate(user_turns))
        return tokenizer(text).input_ids
    raise SvbenchError(f"prompt_template={template!r} is not one of {list(PROMPT_TEMPLATES)}")
