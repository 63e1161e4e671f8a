"""Run one configuration over a benchmark: warm-ups, timed generations, records, AR baseline, summary.

For every question-turn the AR baseline runs first (unless an AR record with the same settings already
exists here or in ``baseline_records``), then the method, on the same prompt: ratios are measured side
by side. Records are appended (flush + fsync) as they are made, so a crash loses at most the question
in flight, and re-running the same command skips what is recorded.
"""
from __future__ import annotations

import contextlib
import copy
import fcntl
import glob
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from svbench.benchmarks import build_prompt, load_benchmark
from svbench.config import build_drafter, build_policy, config_hashes, hashed_settings, validate
from svbench.decoding.drafters import drafter_class
from svbench.decoding.loop import generate
from svbench.decoding.agreement import TIE_BOUND, agreement
from svbench.decoding.verify import Sampling
from svbench.environment import environment
from svbench.errors import SvbenchError
from svbench.models import load_pair
from svbench.results import RecordStore, format_summary, read_records, summarize

AR_LOOKUP = ("benchmark", "question_id", "turn", "seed", "run", "config_hash")
DEFAULT_THREADS = torch.get_num_threads()  # torch's own default, before any job sets threads=


def turn_seed(seed: int, question_id: str, turn: int, run: int) -> int:
    """Independent of order and resume: the same question-turn always gets the same generator."""
    digest = hashlib.sha256(f"{seed}/{question_id}/{turn}/{run}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def _ar_index(records) -> dict:
    return {tuple(r[k] for k in AR_LOOKUP): r for r in records if r["method"] == "ar"}


def _external_ar_records(patterns) -> list[dict]:
    found = []
    for pattern in patterns or []:
        paths = sorted(glob.glob(os.path.expanduser(pattern), recursive=True))
        if not paths:
            raise SvbenchError(f"baseline_records: no file matches {pattern!r}")
        for path in paths:
            found.extend(read_records(Path(path)))
    return found


def _write_json(path: Path, data) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)  # atomic




@dataclass
class Plan:
    """Everything decided before the first generation: config, questions, models, hashes, stores."""
    c: dict
    out_dir: Path
    questions: list
    store: RecordStore
    env: dict
    ar_hash: str
    method_hash: str
    ar_index: dict
    pair: object
    drafter: object
    policy: object
    sampling: Sampling
    _reference: object = None  # float32 copy of the target for divergence checks, made on first need

    @property
    def method(self) -> str:
        return self.c["method"]["name"]

    @property
    def is_ar(self) -> bool:
        return self.drafter is None

    @property
    def policy_name(self) -> str:
        return "none" if self.is_ar else self.c["policy"]["name"]

    def key(self, question_id, turn, run_idx) -> tuple:
        c = self.c
        return (self.method, self.policy_name, self.pair.name, c["benchmark"]["name"], question_id, turn, c["seed"],
                run_idx, self.method_hash)

    def ar_key(self, question_id, turn, run_idx) -> tuple:
        return (self.c["benchmark"]["name"], question_id, turn, self.c["seed"], run_idx, self.ar_hash)

    def wanted(self):
        """(question, turn, run) of every question-turn this configuration covers, in order."""
        return [(q, t, r) for q in self.questions for r in range(self.c["runs"]) for t in range(len(q.turns))]


def plan(cfg, out_dir: Path) -> Plan:
    c = validate(cfg)
    torch.set_num_threads(c["threads"] or DEFAULT_THREADS)  # null: torch's default, also after a job that set it
    questions = load_benchmark(c["benchmark"])
    store = RecordStore(Path(out_dir) / "records.jsonl")
    env = environment(str(c["device"]))
    ar_hash, method_hash = config_hashes(c, env)
    foreign = sorted({r["config_hash"] for r in store.records} - {ar_hash, method_hash})
    if foreign:  # resume is by record key, so another configuration's records would be mixed in silently
        raise SvbenchError(f"{out_dir} holds records of another configuration (config_hash {', '.join(foreign)}; "
                           f"this one: {method_hash}{config_difference(out_dir, c, env, store.records)}); a run "
                           f"folder holds one configuration: use another hydra.run.dir or remove that folder")
    ar_index = _ar_index(_external_ar_records(c["baseline_records"]) + store.records)
    pair = load_pair(c["pair"], c["dtype"], c["device"], drafter_cls=drafter_class(c["method"]),
                     attention=c["attention"], linear=c["linear"])
    sampling = Sampling(float(c["temperature"]), int(c["top_k"]), float(c["top_p"]))
    p = Plan(c, Path(out_dir), questions, store, env, ar_hash, method_hash, ar_index, pair, build_drafter(c, pair),
             build_policy(c), sampling)
    for q in questions:  # preflight: every first-turn prompt must fit the model before anything is generated
        check_length(p, build_prompt(pair.tokenizer, c["prompt_template"], [q.turns[0]], []))
    return p


def config_difference(out_dir: Path, c: dict, env: dict, records: list[dict]) -> str:
    """', differs in: key (old -> new), ...' over what the config hash covers (config.hashed_settings) between
    the folder's summary.json (its config and environment) and this run; without a readable summary.json, the
    cpu and gpu of the folder's last record; '' when there is nothing to compare."""
    def leaves(d, prefix=""):
        for k, v in (d or {}).items():
            if isinstance(v, dict):
                yield from leaves(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}", v

    new = dict(leaves(hashed_settings(c, env)))
    try:
        summary = json.loads((out_dir / "summary.json").read_text())
        old = dict(leaves(hashed_settings(summary["config"], summary["env"])))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, SvbenchError):  # none, torn or another schema
        last = (records[-1].get("env") or {}) if records else {}
        old = {f"hardware.{k}": last[k] for k in ("cpu", "gpu") if k in last}
        new = {k: v for k, v in new.items() if k in old}
    diff = [f"{k} ({old.get(k)!r} -> {new.get(k)!r})" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return f", differs in: {'; '.join(diff[:6])}" if diff else ""


def check_length(p: Plan, prompt_ids) -> None:
    c, max_positions = p.c, getattr(p.pair.target.config, "max_position_embeddings", None)
    longest = len(prompt_ids) + c["max_new_tokens"] + (p.policy.max_len if p.policy else 0) + 1
    if max_positions and longest > max_positions:
        raise SvbenchError(
            f"prompt ({len(prompt_ids)} tokens) + max_new_tokens ({c['max_new_tokens']}) + draft exceeds the "
            f"target's max_position_embeddings ({max_positions}); lower max_new_tokens")


def timed(p: Plan, prompt_ids, with_drafter: bool, seed: int, max_new_tokens: int):
    generator = torch.Generator(device=p.pair.target.device).manual_seed(seed)
    return generate(p.pair.target, prompt_ids, max_new_tokens, p.drafter if with_drafter else None,
                    p.policy if with_drafter else None, p.sampling, p.pair.eos_token_ids,
                    p.c["benchmark"]["ignore_eos"], generator)


def make_record(p: Plan, name, pol, chash, question, turn, run_idx, prompt_ids, gen) -> dict:
    c, rounds = p.c, gen.rounds
    return {
        "method": name, "policy": pol, "pair": p.pair.name, "benchmark": c["benchmark"]["name"], "seed": c["seed"],
        "temperature": c["temperature"], "dtype": c["dtype"], "device": str(c["device"]),
        "max_new_tokens": c["max_new_tokens"], "question_id": question.question_id, "category": question.category,
        "turn": turn, "run": run_idx, "config_hash": chash, "prompt_len": len(prompt_ids),
        "new_tokens": len(gen.ids), "wall_time": gen.wall_time, "hit_eos": gen.hit_eos, "ids": gen.ids,
        "rounds": {"drafted": [r.drafted for r in rounds], "accepted": [r.accepted for r in rounds],
                   "steps": [r.steps for r in rounds],
                   "draft_s": [round(r.draft_s, 6) for r in rounds],
                   "verify_s": [round(r.verify_s, 6) for r in rounds]},
        "draft_s": sum(r.draft_s for r in rounds), "verify_s": sum(r.verify_s for r in rounds),
        "draft_entropy": ([[round(h, 4) for h in r.draft_entropy] for r in rounds] if name != "ar" else None),
        "env": p.env,
    }


def divergence(p: Plan, prompt_ids: list[int], ar_ids: list[int], ids: list[int]) -> dict:
    """``agreement`` of a greedy record with its AR baseline (see ``agreement``), the float32 reference made
    on first need."""
    if ids != ar_ids and p._reference is None:
        target = p.pair.target
        p._reference = target if target.dtype == torch.float32 else copy.deepcopy(target).float()
    return agreement(p._reference, prompt_ids, ar_ids, ids, TIE_BOUND[p.c["dtype"]])


def warm_up(p: Plan, todo) -> None:
    c = p.c
    if not todo or not c["warmup"]:
        return
    prompt = build_prompt(p.pair.tokenizer, c["prompt_template"], [todo[0][0].turns[0]], [])
    for _ in range(c["warmup"]):
        timed(p, prompt, False, 0, min(c["warmup_tokens"], c["max_new_tokens"]))
        if not p.is_ar:
            timed(p, prompt, True, 0, min(c["warmup_tokens"], c["max_new_tokens"]))


def execute(p: Plan) -> None:
    """For every question-turn: the AR baseline (unless recorded), then the method, on the same prompt.
    Records are appended as they are made; what is recorded already is skipped (resume)."""
    c, tokenizer = p.c, p.pair.tokenizer
    warm_up(p, [w for w in p.wanted() if p.key(w[0].question_id, w[1], w[2]) not in p.store.by_key])
    bar = tqdm(p.questions, desc=f"{p.method}/{p.policy_name}", unit="q", disable=not c["progress"], file=sys.stderr)
    for question in bar:
        for run_idx in range(c["runs"]):
            ar_answers = []  # later turns are built from AR's answers: AR and the method see identical prompts
            for turn in range(len(question.turns)):
                seed = turn_seed(c["seed"], question.question_id, turn, run_idx)
                prompt = build_prompt(tokenizer, c["prompt_template"], list(question.turns[: turn + 1]), ar_answers)
                check_length(p, prompt)
                ar = p.ar_index.get(p.ar_key(question.question_id, turn, run_idx))
                if ar is not None and ar["prompt_len"] != len(prompt):  # the hash has the file's path, not its text
                    raise SvbenchError(f"the AR record of question {question.question_id} turn {turn} was made for "
                                       f"a {ar['prompt_len']}-token prompt, this one has {len(prompt)}: the question "
                                       f"file or $SVBENCH_DATA changed; use another hydra.run.dir / baseline_records")
                if ar is None:
                    gen = timed(p, prompt, False, seed, c["max_new_tokens"])
                    ar = make_record(p, "ar", "none", p.ar_hash, question, turn, run_idx, prompt, gen)
                    ar.update(ar_new_tokens=ar["new_tokens"], ar_wall_time=ar["wall_time"], speedup=1.0,
                              lossless=True, agreement="exact", divergence=None)
                    p.store.append(ar)
                    p.ar_index[p.ar_key(question.question_id, turn, run_idx)] = ar
                if turn + 1 < len(question.turns):  # the next turn's prompt holds this answer
                    ar_answers.append(tokenizer.decode(ar["ids"], skip_special_tokens=True))
                if p.is_ar or p.key(question.question_id, turn, run_idx) in p.store.by_key:
                    continue
                gen = timed(p, prompt, True, seed, c["max_new_tokens"])
                record = make_record(p, p.method, p.policy_name, p.method_hash, question, turn, run_idx, prompt, gen)
                speed, ar_speed = record["new_tokens"] / record["wall_time"], ar["new_tokens"] / ar["wall_time"]
                record.update(ar_new_tokens=ar["new_tokens"], ar_wall_time=ar["wall_time"], speedup=speed / ar_speed,
                              lossless=(gen.ids == ar["ids"]) if p.sampling.greedy else None,
                              **(divergence(p, prompt, ar["ids"], gen.ids) if p.sampling.greedy
                                 else {"agreement": None, "divergence": None}))
                p.store.append(record)
    bar.close()


def report(p: Plan) -> dict:
    """summary.json (atomic), the W&B run if asked, and the printed table."""
    c = p.c
    if p.is_ar:  # AR records reused from baseline_records count too
        mine = [p.ar_index[p.ar_key(q.question_id, t, r)] for q, t, r in p.wanted()]
    else:
        mine = [p.store.by_key[p.key(q.question_id, t, r)] for q, t, r in p.wanted()]
    summary = summarize(mine)
    result = {"method": p.method, "policy": p.policy_name, "pair": p.pair.name, "benchmark": c["benchmark"]["name"],
              "config_hash": p.method_hash, "config": c, "env": p.env, "summary": summary}
    _write_json(p.out_dir / "summary.json", result)
    if c.get("logger") == "wandb":
        from svbench.wandb_logger import log_run
        log_run(c, p.out_dir, result, mine)
    print(f"\n{p.method} / {p.policy_name} vs AR on {p.pair.name}, {c['benchmark']['name']}: {len(mine)} "
          f"question-turn(s), {c['max_new_tokens']} new tokens max, {c['dtype']} on {c['device']}, "
          f"{'greedy' if p.sampling.greedy else 'T=' + str(c['temperature'])}; same prompts, timed side by side "
          f"-> {p.out_dir / 'records.jsonl'}")
    print(format_summary(summary))
    if p.sampling.greedy and not p.is_ar:
        counts = summary["overall"]  # exact / tie / mismatch, counted once in summarize
        print(f"token ids vs AR: {counts['exact']} exact, {counts['tie']} near-tie divergence(s) "
              f"(|logit gap| <= {TIE_BOUND[c['dtype']]} in float32), {counts['mismatch']} mismatch(es)")
        if counts["mismatch"]:
            print(f"svbench: WARNING: {counts['mismatch']} record(s) differ from AR beyond a near-tie"
                  + (" in float32: this is a bug, please report it" if c["dtype"] == "float32" else
                     f" ({c['dtype']}); check them in float32"), file=sys.stderr)
    return result


def run(cfg, out_dir: Path) -> dict:
    """Run one configuration: plan (validate, load), execute (generate, record), report (summarise). The
    folder is locked meanwhile: a second run into it stops with one line instead of duplicating records."""
    with folder_lock(Path(out_dir)):
        p = plan(cfg, out_dir)
        execute(p)
        return report(p)


@contextlib.contextmanager
def folder_lock(out_dir: Path):
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / ".svbench.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released when fh closes, also when the process dies
        except BlockingIOError:
            raise SvbenchError(f"another svbench run is writing {out_dir}; wait for it or use another "
                               f"hydra.run.dir") from None
        except OSError as exc:  # a file system without flock (e.g. Lustre mounted noflock): run unlocked
            print(f"svbench: warning: {out_dir}: no lock ({exc.strerror}); do not start two runs into it",
                  file=sys.stderr)
        yield
