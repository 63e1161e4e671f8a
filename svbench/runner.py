"""Run one configuration over a benchmark: warm-ups, timed generations, records, AR baseline, summary.

For every question-turn the AR baseline runs first (unless an AR record with the same settings already
exists here or in ``baseline_records``), then the method, on the same prompt: ratios are measured side
by side. Records are appended (flush + fsync) as they are made, so a crash loses at most the question
in flight, and re-running the same command skips what is recorded.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from svbench.benchmarks import build_prompt, load_benchmark
from svbench.config import build_drafter, build_policy, config_hash, generation_settings, method_settings, validate
from svbench.decoding.loop import generate
from svbench.decoding.verify import Sampling
from svbench.environment import environment
from svbench.errors import SvbenchError
from svbench.models import load_pair
from svbench.results import RecordStore, format_summary, read_records, summarize

AR_LOOKUP = ("benchmark", "question_id", "turn", "seed", "run", "config_hash")


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


def run(cfg, out_dir: Path) -> dict:
    c = validate(cfg)
    out_dir = Path(out_dir)
    if c["threads"]:
        torch.set_num_threads(c["threads"])
    method, is_ar = c["method"]["name"], c["method"]["name"] == "ar"
    policy_name = "none" if is_ar else c["policy"]["name"]
    questions = load_benchmark(c["benchmark"])
    store = RecordStore(out_dir / "records.jsonl")
    env = environment(str(c["device"]))
    hardware = {"cpu": env["cpu"], "gpu": env["gpu"]}  # an AR baseline is only reused from the same hardware
    ar_hash = config_hash(generation_settings(c), hardware)
    method_hash = ar_hash if is_ar else config_hash(generation_settings(c), hardware, method_settings(c))
    ar_index = _ar_index(_external_ar_records(c["baseline_records"]) + store.records)

    pair = load_pair(c["pair"], c["dtype"], c["device"], draft_role=c["method"].get("draft_role"))
    drafter, policy = build_drafter(c, pair), build_policy(c)
    sampling = Sampling(float(c["temperature"]), int(c["top_k"]), float(c["top_p"]))
    bench = c["benchmark"]
    eos_ids = pair.eos_token_ids
    max_positions = getattr(pair.target.config, "max_position_embeddings", None)
    common = {"pair": pair.name, "benchmark": bench["name"], "seed": c["seed"], "temperature": c["temperature"],
              "dtype": c["dtype"], "device": str(c["device"]), "max_new_tokens": c["max_new_tokens"]}

    def check_length(prompt_ids):
        longest = len(prompt_ids) + c["max_new_tokens"] + (policy.max_len if policy else 0) + 1
        if max_positions and longest > max_positions:
            raise SvbenchError(
                f"prompt ({len(prompt_ids)} tokens) + max_new_tokens ({c['max_new_tokens']}) + draft exceeds the "
                f"target's max_position_embeddings ({max_positions}); lower max_new_tokens"
            )

    def timed(prompt_ids, with_drafter: bool, seed: int, max_new_tokens: int):
        generator = torch.Generator(device=pair.target.device).manual_seed(seed)
        return generate(pair.target, prompt_ids, max_new_tokens,
                        drafter if with_drafter else None, policy if with_drafter else None,
                        sampling, eos_ids, bench["ignore_eos"], generator)

    def make_record(name, pol, chash, question, turn, run_idx, prompt_ids, gen) -> dict:
        rounds = gen.rounds
        return {
            "method": name, "policy": pol, **common, "question_id": question.question_id,
            "category": question.category, "turn": turn, "run": run_idx, "config_hash": chash,
            "prompt_len": len(prompt_ids), "new_tokens": len(gen.ids), "wall_time": gen.wall_time,
            "hit_eos": gen.hit_eos, "ids": gen.ids,
            "rounds": {"drafted": [r.drafted for r in rounds], "accepted": [r.accepted for r in rounds],
                       "draft_s": [round(r.draft_s, 6) for r in rounds],
                       "verify_s": [round(r.verify_s, 6) for r in rounds]},
            "draft_s": sum(r.draft_s for r in rounds), "verify_s": sum(r.verify_s for r in rounds),
            "draft_entropy": ([[round(h, 4) for h in r.draft_entropy] for r in rounds]
                              if policy is not None and name != "ar" else None),
            "env": env,
        }

    def key(name, pol, chash, qid, turn, run_idx):
        return (name, pol, pair.name, bench["name"], qid, turn, c["seed"], run_idx, chash)

    # preflight: every first-turn prompt must fit the model before anything is generated
    prompts0 = {q.question_id: build_prompt(pair.tokenizer, c["prompt_template"], [q.turns[0]], []) for q in questions}
    for prompt in prompts0.values():
        check_length(prompt)

    todo = [q for q in questions for run_idx in range(c["runs"]) for t in range(len(q.turns))
            if key(method, policy_name, method_hash, q.question_id, t, run_idx) not in store.by_key]
    if todo and c["warmup"]:
        warm_prompt = prompts0[todo[0].question_id]
        for _ in range(c["warmup"]):
            timed(warm_prompt, False, 0, min(c["warmup_tokens"], c["max_new_tokens"]))
            if not is_ar:
                timed(warm_prompt, True, 0, min(c["warmup_tokens"], c["max_new_tokens"]))

    decode = lambda ids: pair.tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
    bar = tqdm(questions, desc=f"{method}/{policy_name}", unit="q", disable=not c["progress"], file=sys.stderr)
    for question in bar:
        for run_idx in range(c["runs"]):
            ar_answers = []  # later turns are built from AR's answers: AR and the method see identical prompts
            for turn in range(len(question.turns)):
                seed = turn_seed(c["seed"], question.question_id, turn, run_idx)
                prompt = build_prompt(pair.tokenizer, c["prompt_template"], list(question.turns[: turn + 1]),
                                      ar_answers)
                check_length(prompt)
                # --- AR baseline (reused when recorded) ---
                ar_lookup = (bench["name"], question.question_id, turn, c["seed"], run_idx, ar_hash)
                ar = ar_index.get(ar_lookup)
                if ar is None:
                    gen = timed(prompt, False, seed, c["max_new_tokens"])
                    ar = make_record("ar", "none", ar_hash, question, turn, run_idx, prompt, gen)
                    ar.update(ar_new_tokens=ar["new_tokens"], ar_wall_time=ar["wall_time"], speedup=1.0,
                              lossless=True)
                    store.append(ar)
                    ar_index[ar_lookup] = ar
                if turn + 1 < len(question.turns):  # the next turn's prompt holds this answer
                    ar_answers.append(decode(ar["ids"]))
                if is_ar:
                    continue
                # --- the method ---
                record = store.by_key.get(key(method, policy_name, method_hash, question.question_id, turn, run_idx))
                if record is None:
                    gen = timed(prompt, True, seed, c["max_new_tokens"])
                    record = make_record(method, policy_name, method_hash, question, turn, run_idx, prompt, gen)
                    speed = record["new_tokens"] / record["wall_time"]
                    ar_speed = ar["new_tokens"] / ar["wall_time"]
                    record.update(ar_new_tokens=ar["new_tokens"], ar_wall_time=ar["wall_time"],
                                  speedup=speed / ar_speed,
                                  lossless=(gen.ids == ar["ids"]) if sampling.greedy else None)
                    store.append(record)
    bar.close()

    wanted = {key(method, policy_name, method_hash, q.question_id, t, run_idx)
              for q in questions for run_idx in range(c["runs"]) for t in range(len(q.turns))}
    mine = [r for k, r in store.by_key.items() if k in wanted]
    if is_ar:  # AR records reused from baseline_records count too
        mine = [ar_index[(bench["name"], q.question_id, t, c["seed"], run_idx, ar_hash)]
                for q in questions for run_idx in range(c["runs"]) for t in range(len(q.turns))]
    summary = summarize(mine)
    result = {"method": method, "policy": policy_name, "pair": pair.name, "benchmark": bench["name"],
              "config_hash": method_hash, "config": c, "env": env, "summary": summary}
    _write_json(out_dir / "summary.json", result)
    if c.get("logger") == "wandb":
        from svbench.wandb_logger import log_run
        log_run(c, out_dir, result, mine)
    print(f"\n{method} / {policy_name} on {pair.name}, {bench['name']} ({c['dtype']}, {c['device']}) "
          f"-> {out_dir / 'records.jsonl'}")
    print(format_summary(summary))
    if not sampling.greedy or is_ar:
        return result
    lossy = summary["overall"]["n"] - summary["overall"]["lossless"]
    if lossy:
        print(f"note: {lossy} record(s) differ from AR token ids"
              + (" (expected under bf16/fp16 near-ties; check losslessness in float32)" if c["dtype"] != "float32"
                 else " in float32: this is a bug, please report it"))
    return result

