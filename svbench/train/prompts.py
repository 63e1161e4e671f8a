"""Training prompts from a train_prompts/ folder (by default the one shipped in svbench/data/, see its
NOTICE.md): only the prompt fields are read. Files may be gzip-compressed (``name.jsonl.gz``, as shipped)
or plain; both give the same prompts.

Each reader turns one file schema into plain prompt strings; the German sentences become
"Translate German to English: ...", the SciTLDR abstracts "Summarize: ...".
"""
from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass
from pathlib import Path

from svbench import benchmarks
from svbench.errors import SvbenchError


@dataclass(frozen=True)
class TrainPrompt:
    source: str  # file path relative to train_prompts/, without a .gz suffix
    text: str


def _open(path: Path):
    """A text handle on a plain or gzip-compressed (.gz) file."""
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def _read_text(path: Path) -> str:
    with _open(path) as fh:
        return fh.read()


def _plain_name(path: Path) -> str:
    return path.name.removesuffix(".gz")


def _jsonl(path: Path):
    with _open(path) as fh:
        for line_no, line in enumerate(fh, start=1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    raise SvbenchError(f"{path}, line {line_no}: not valid JSON ({exc.msg})") from None


def _with_input(instruction: str, extra: str | None) -> str:
    return f"{instruction.strip()}\n\n{extra.strip()}" if extra and extra.strip() else instruction.strip()


def _gsm8k(path):
    return [row["question"] for row in _jsonl(path)]


def _gpteacher(path):
    return [_with_input(row["instruction"], row.get("input")) for row in json.loads(_read_text(path))]


def _self_instruct(path):
    out = []
    for row in _jsonl(path):
        instances = row.get("instances") or [{}]
        out.append(_with_input(row["instruction"], instances[0].get("input")))
    return out


def _t0(path):
    return [row["prompt"].strip() for row in _jsonl(path)]


def _oasst(path):
    return [row for row in _jsonl(path) if isinstance(row, str)]


def _arena_hard(path):
    return [row["turns"][0]["content"] for row in _jsonl(path)]


def _nq(path):
    return [row["question"].strip().capitalize() + "?" for row in _jsonl(path)]


def _scitldr(path):
    return ["Summarize: " + " ".join(row["source"]) for row in _jsonl(path)]


def _conllu(path):
    texts = re.findall(r"^# text = (.+)$", _read_text(path), flags=re.M)
    return ["Translate German to English: " + t.strip() for t in texts]


READERS = {  # folder -> reader for every file in it
    "gsm8k": _gsm8k, "gpteacher": _gpteacher, "self_instruct": _self_instruct, "self_instruct_t0": _t0,
    "oasst": _oasst, "arena_hard": _arena_hard, "nq_open": _nq, "scitldr": _scitldr, "ud_german": _conllu,
}


def train_prompt_dir(path: str | None = None) -> Path:
    """path, else $SVBENCH_DATA/train_prompts, else the folder shipped in svbench/data/."""
    folder = Path(path).expanduser() if path else benchmarks.data_dir() / "train_prompts"
    if not folder.is_dir():
        raise SvbenchError(f"training prompt folder {str(folder)!r} does not exist")
    return folder


def load_train_prompts(folder: Path) -> list[TrainPrompt]:
    """All prompts, in a fixed order (folders and files sorted by name without .gz), exact duplicates removed."""
    prompts, seen = [], set()
    for source, texts in _files(folder, READERS):
        for text in texts:
            if text and text not in seen:
                seen.add(text)
                prompts.append(TrainPrompt(source, text))
    if not prompts:
        raise SvbenchError(f"no training prompts found under {folder}")
    return prompts


def _fixed_gsm8k(path):
    return [(row["question"], re.sub(r"<<[^>]*>>", "", row["answer"])) for row in _jsonl(path)]  # no calculator marks


def _fixed_gpteacher(path):
    return [(_with_input(row["instruction"], row.get("input")), row["response"]) for row in json.loads(_read_text(path))]


def _fixed_self_instruct(path):
    out = []
    for row in _jsonl(path):
        first = (row.get("instances") or [{}])[0]
        out.append((_with_input(row["instruction"], first.get("input")), first.get("output", "")))
    return out


def _fixed_t0(path):
    return [(row["prompt"].strip(), row["completion"]) for row in _jsonl(path)]


def _fixed_scitldr(path):
    return [("Summarize: " + " ".join(row["source"]), (row.get("target") or [""])[0]) for row in _jsonl(path)]


FIXED_READERS = {  # folder -> (prompt, response) pairs: the fixed responses EAGLE-1 trains on (NOTICE.md)
    "gsm8k": _fixed_gsm8k, "gpteacher": _fixed_gpteacher, "self_instruct": _fixed_self_instruct,
    "self_instruct_t0": _fixed_t0, "scitldr": _fixed_scitldr,
}


def _files(folder: Path, readers: dict):
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        reader = readers.get(sub.name)
        if reader is None:
            continue
        files = [f for f in sub.iterdir() if Path(_plain_name(f)).suffix in (".json", ".jsonl", ".conllu")]
        for file in sorted(files, key=lambda f: (_plain_name(f), f.name)):
            yield f"{sub.name}/{_plain_name(file)}", reader(file)


def load_fixed_responses(folder: Path) -> list[tuple[TrainPrompt, str]]:
    """(prompt, the file's own response) for every file that holds responses; fixed order, a prompt seen
    before dropped, empty responses dropped. Prompt texts are the same strings load_train_prompts gives."""
    pairs, seen = [], set()
    for source, items in _files(folder, FIXED_READERS):
        for text, response in items:
            text = text.strip()
            if text and response.strip() and text not in seen:
                seen.add(text)
                pairs.append((TrainPrompt(source, text), response.strip()))
    if not pairs:
        raise SvbenchError(f"no fixed responses found under {folder}")
    return pairs


def normalise(text: str) -> str:
    """Lower case, letters and digits only: the key for exact-match overlap checks."""
    return re.sub(r"[^0-9a-z]+", "", text.lower())


EVAL_PREFIXES = ("Translate German to English: ", "Summarize: ")


def evaluation_turns(data_dir: Path | None = None) -> set[str]:
    """Normalised text of every evaluation prompt (Spec-Bench, MT-Bench, EAGLE sets, SVIP's Spec-Bench) in a
    data folder; default: $SVBENCH_DATA, else svbench/data/."""
    data_dir = Path(data_dir) if data_dir is not None else benchmarks.data_dir()
    keys = set()
    files = [data_dir / "spec_bench/question.jsonl", data_dir / "mt_bench/question.jsonl",
             *sorted((data_dir / "eagle_bench").glob("*/question.jsonl"))]
    for file in files:
        for row in _jsonl(file):
            for turn in row["turns"]:
                keys.add(normalise(turn))
                for prefix in EVAL_PREFIXES:
                    if turn.startswith(prefix):
                        keys.add(normalise(turn[len(prefix):]))
    svip = data_dir / "svip_spec_bench/spec-bench.jsonl"
    if svip.is_file():
        keys.update(normalise(row["prompt"]) for row in _jsonl(svip))
    keys.discard("")
    return keys
