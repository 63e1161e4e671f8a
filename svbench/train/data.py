"""Distillation data: the frozen target answers the training prompts; fixed responses ride along.

    python -m svbench.train.data --out train_data/smollm2                  (target answers; hours on 2 cores)
    python -m svbench.train.data --out train_data/smollm2_fixed --fixed    (the prompt files' own responses)

Target answers: prompts are shuffled once with a fixed seed; shard k holds prompts [k*S, (k+1)*S) of that
order, generated at temperature temperatures[k % len(temperatures)] (0 = greedy), and is written atomically
(tmp + rename) as a Parquet file, so an interrupted run resumes at the first missing shard; the manifest
records how many prompts each shard was made from, so a run with a larger --num-prompts also regenerates a
shard that an earlier, smaller run left short. The prompt set's hash is recorded too (prompts_sha256).
Fixed responses (EAGLE-1's cheap data, ``--fixed``): the responses the prompt files already hold
(svbench.train.prompts.FIXED_READERS), tokenised after the chat prompt; no model runs here, the target's
features and next-token distributions over them are computed by the training recipes (one prefill).

A prompt is held out (never trained on) when a hash of its text falls below --heldout-permille: the split
is by prompt and does not depend on how many prompts are generated. Rows: {i, source, split, temperature
(None for fixed responses), prompt_len, ids} where ids = prompt + answer (the answer ends at EOS when one
was generated). The shards are read with `datasets` (memory-mapped Arrow).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from svbench.attention import CHOICES
from svbench.benchmarks import build_prompt
from svbench.config import group_config
from svbench.decoding.kv_cache import StaticKVCache
from svbench.decoding.verify import row_argmax, sample_rows
from svbench.errors import SvbenchError, report_user_errors
from svbench.models import load_pair
from svbench.train.prompts import TrainPrompt, load_fixed_responses, load_train_prompts, train_prompt_dir

SHARD_GLOB = "shard-*.parquet"


def is_heldout(text: str, permille: int) -> bool:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) % 1000 < permille


def shuffled(items: list, seed: int) -> list:
    order = list(items)
    random.Random(seed).shuffle(order)
    return order


def read_shards(folder: Path, split: str | None = None) -> list[dict]:
    """Every row of a data folder's shards (optionally one split), in shard order."""
    import datasets

    files = sorted(str(f) for f in Path(folder).glob(SHARD_GLOB))
    if not files:
        raise SvbenchError(f"no generated data under {folder}; run python -m svbench.train.data")
    try:
        table = datasets.Dataset.from_parquet(files, keep_in_memory=False)  # memory-mapped Arrow
    except Exception as exc:  # a truncated or foreign file
        raise SvbenchError(f"{folder}: cannot read the Parquet shards ({exc})") from None
    if split is not None:
        table = table.filter(lambda s: [x == split for x in s], input_columns="split", batched=True)
    rows = table.to_list()
    if not rows:
        raise SvbenchError(f"no rows under {folder} with split={split}")
    return rows


def shard_sha256(path: Path) -> str:
    """The hex sha256 of a shard file, as manifest.json lists it."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# speed knobs of generation, not settings: the defaults of generate_all and the CLI
MAX_BATCH_TOKENS = 131072  # rows x (longest sequence + max_new_tokens) per batch
DATA_ATTENTION = "sdpa"    # the target's attention path while generating (svbench.attention)

# the arguments that decide what a data folder holds: a resumed or grown run must match them (not --num-prompts:
# a larger one grows the folder; not the speed knobs --batch-size, --max-batch-tokens, --prefill-group, --attention,
# --threads)
DATA_SETTINGS = ("pair", "prompts_dir", "fixed", "shard_size", "max_new_tokens", "max_prompt_tokens", "temperatures",
                 "heldout_permille", "dtype", "seed")


def prompt_items(args) -> list:
    """(prompt, fixed response or None) in the shuffled order that shards take them from."""
    folder = train_prompt_dir(args.prompts_dir)
    items = load_fixed_responses(folder) if getattr(args, "fixed", False) else \
        [(p, None) for p in load_train_prompts(folder)]
    return shuffled(items, args.seed)


def prompt_set_sha256(items: list) -> str:
    return hashlib.sha256(json.dumps([[p.text, r] for p, r in items]).encode()).hexdigest()[:16]


def data_settings(args) -> dict:
    return {k: getattr(args, k) for k in DATA_SETTINGS}


def read_manifest(folder: Path) -> dict:
    """manifest.json as written by write_manifest; a damaged one fails with one line."""
    try:
        manifest = json.loads((Path(folder) / "manifest.json").read_text())
        manifest["settings"], manifest["num_prompts"], manifest["shards"]  # noqa: B018 (the keys every reader needs)
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise SvbenchError(f"{folder}/manifest.json is damaged ({type(e).__name__}: {e}); regenerate it with "
                           f"python -m svbench.train.data") from None
    return manifest


def check_manifest(folder: Path) -> dict:
    """The folder's manifest.json, after checking it against the files: every listed shard is present with
    its sha256, and no shard is unlisted (a copied, truncated or half-committed folder fails with one line)."""
    folder = Path(folder)
    if not (folder / "manifest.json").is_file():
        raise SvbenchError(f"{folder} has no manifest.json; regenerate with python -m svbench.train.data")
    manifest = read_manifest(folder)
    listed = {s["file"]: s["sha256"] for s in manifest["shards"]}
    on_disk = {f.name for f in folder.glob(SHARD_GLOB)}
    missing, unlisted = sorted(set(listed) - on_disk), sorted(on_disk - set(listed))
    changed = sorted(f for f in set(listed) & on_disk if shard_sha256(folder / f) != listed[f])
    if missing or unlisted or changed:
        raise SvbenchError(f"{folder}: the shards do not match manifest.json (missing {missing}, not listed "
                           f"{unlisted}, sha256 differs {changed})")
    return manifest


def write_shard(path: Path, rows: list[dict], vocab_size: int) -> None:
    """Atomically: tmp + rename, so a shard is either complete or absent. Token ids as uint16 when the
    vocabulary fits (SmolLM2: 49,152), else int32."""
    import datasets
    import pyarrow.parquet as pq

    columns = {k: [r[k] for r in rows] for k in ("i", "source", "split", "temperature", "prompt_len", "ids")}
    features = datasets.Features({"i": datasets.Value("int32"), "source": datasets.Value("string"),
                                  "split": datasets.Value("string"), "temperature": datasets.Value("float32"),
                                  "prompt_len": datasets.Value("int32"),
                                  "ids": datasets.Sequence(datasets.Value("uint16" if vocab_size <= 65536 else "int32"))})
    tmp = path.with_suffix(".tmp")
    table = datasets.Dataset.from_dict(columns, features=features).data.table  # Arrow, typed by `features`
    pq.write_table(table, tmp, compression="zstd", compression_level=19)  # ~1.3 bytes per token id
    tmp.replace(path)


def fixed_answer(response: list[int], max_tokens: int, eos: int) -> list[int]:
    """A fixed response as an answer: ended by EOS when it fits, cut (no EOS: it did not end) when not."""
    return response + [eos] if len(response) < max_tokens else response[:max_tokens]


def pick(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    """(B, V) -> (B,): argmax at temperature 0, else a sample of softmax(logits / temperature)."""
    if temperature == 0:
        return row_argmax(logits)  # the verifier's greedy pick (blocked on a CPU)
    probs = torch.softmax(logits.float() / temperature, dim=-1)  # (B, V)
    return sample_rows(probs, generator)  # torch.multinomial's distribution, ~100x faster for 128 rows


@torch.inference_mode()
def prefill_rows(model, seqs: list[list[int]], group: int = 8) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
    """The K/V of each sequence, per layer (kv_heads, n, head_dim) each; n = 0 gives empty tensors.

    `group` sequences share one forward, right-padded: under the causal mask a real token never sees a
    pad (the pads come after it), so each row's first n K/V are its own; group=1 is row by row."""
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    empty = torch.zeros(config.num_key_value_heads, 0, head_dim, dtype=model.dtype, device=model.device)
    out: list = [[(empty, empty)] * config.num_hidden_layers if not ids else None for ids in seqs]
    todo = sorted((j for j, ids in enumerate(seqs) if ids), key=lambda j: len(seqs[j]))  # similar lengths together
    for start in range(0, len(todo), group):
        rows = todo[start:start + group]
        width = len(seqs[rows[-1]])
        ids = torch.tensor([seqs[j] + [0] * (width - len(seqs[j])) for j in rows], device=model.device)  # (g, width)
        cache = StaticKVCache(config.num_hidden_layers, width)
        model.model(input_ids=ids, cache=cache, use_cache=True)
        for g, j in enumerate(rows):
            n = len(seqs[j])
            out[j] = [(layer.keys[g, :, :n], layer.values[g, :, :n]) for layer in cache.layers]  # (kv_heads, n, head_dim)
    return out


@torch.inference_mode()
def generate_all(model, prompts: list[list[int]], max_new_tokens: int, temperature: float, eos_ids,
                 generator: torch.Generator | None = None, batch_size: int = 128, max_batch_tokens: int = MAX_BATCH_TOKENS,
                 prefill_group: int = 8, on_done=None) -> list[list[int]]:
    """Answers to every prompt (each cut after its first EOS or at max_new_tokens), batch_size rows at a time
    with a pre-allocated KV cache (svbench's StaticKVCache, written in place; rows left-padded).

    Each row enters a batch as its K/V so far plus one pending token (a new prompt: its K/V without the
    last token, `prefill_group` prompts per prefill forward, right-padded, nothing masked). Rows that
    finish leave the batch (the cache keeps only the live rows once a quarter are done). Once fewer than
    half the rows are live and prompts are waiting, the live rows' K/V are copied out (not recomputed) and
    the next batch takes the shortest sequences of the pool, so batches stay full; a batch of long
    sequences has fewer rows (rows x (longest + max_new_tokens) <= max_batch_tokens).
    on_done(n): n answers finished."""
    device, L = model.device, model.config.num_hidden_layers
    eos = torch.tensor(sorted(eos_ids), device=device)
    answers: list[list[int]] = [[] for _ in prompts]
    state: dict[int, list] = {}  # row -> per-layer (K, V) (kv_heads, n, head_dim) of all but its pending token
    pool = list(range(len(prompts)))
    while pool:
        pool.sort(key=lambda i: len(prompts[i]) + len(answers[i]))
        batch = []
        for i in pool:
            if batch and (len(batch) + 1) * (len(prompts[i]) + len(answers[i]) + max_new_tokens) > max_batch_tokens:
                break
            batch.append(i)
            if len(batch) == batch_size:
                break
        pool = pool[len(batch):]
        new = [i for i in batch if i not in state]
        state.update(zip(new, prefill_rows(model, [prompts[i][:-1] for i in new], prefill_group)))
        cached = [len(prompts[i]) + len(answers[i]) - 1 for i in batch]  # tokens before the pending one
        width, steps = max(cached), max(max_new_tokens - len(answers[i]) for i in batch)
        cache = StaticKVCache(L, width + steps)
        mask = torch.zeros(len(batch), width + steps, dtype=torch.long, device=device)  # 1 = a real token
        for b, i in enumerate(batch):  # right-align each row's K/V at column `width`
            for layer, (keys, values) in zip(cache.layers, state.pop(i)):
                if not layer.is_initialized:
                    layer.lazy_initialization(keys[None].expand(len(batch), -1, -1, -1),
                                              values[None].expand(len(batch), -1, -1, -1))
                layer.keys[b, :, width - cached[b]: width] = keys
                layer.values[b, :, width - cached[b]: width] = values
            mask[b, width - cached[b]: width] = 1
        for layer in cache.layers:
            layer.length = width
        token = torch.tensor([answers[i][-1] if answers[i] else prompts[i][-1] for i in batch], device=device)
        position = torch.tensor(cached, device=device)  # (b,) the pending token's position
        live = list(batch)  # the prompt index of each batch row
        finished: set[int] = set()
        for t in range(steps):
            mask[:, width + t] = 1
            hidden = model.model(input_ids=token[:, None], attention_mask=mask[:, : width + t + 1],
                                 position_ids=position[:, None], cache=cache, use_cache=True).last_hidden_state
            token = pick(model.lm_head(hidden[:, -1]), temperature, generator)  # (b,)
            done = 0
            alive = []
            for row, (i, tok, stop) in enumerate(zip(live, token.tolist(), torch.isin(token, eos).tolist())):
                if i in finished:  # done, still in the batch until the next compaction
                    continue
                answers[i].append(tok)  # one transfer per step
                if stop or len(answers[i]) >= max_new_tokens:
                    finished.add(i)
                    done += 1
                else:
                    alive.append(row)
            if on_done is not None and done:
                on_done(done)
            if not alive:
                break
            if pool and len(alive) < batch_size // 2:  # refill: the live rows' K/V go back to the pool
                end = width + t + 1
                for row in alive:
                    i = live[row]
                    start = end - (len(prompts[i]) + len(answers[i]) - 1)
                    state[i] = [(layer.keys[row, :, start:end].clone(), layer.values[row, :, start:end].clone())
                                for layer in cache.layers]
                    pool.append(i)
                break
            if len(live) - len(alive) >= max(1, len(live) // 4):  # drop finished rows from the batch
                keep = torch.tensor(alive, device=device)
                cache.select_batch(keep)
                mask, position, token = mask[keep], position[keep], token[keep]
                live = [live[row] for row in alive]
            position = position + 1
    return answers


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description="Generate distillation data with the target model.")
    ap.add_argument("--out", required=True, help="output folder (Parquet shards + manifest.json)")
    ap.add_argument("--pair", default="smollm2_layercut", help="conf/pair/<name>.yaml; only its target is used")
    ap.add_argument("--prompts-dir", default=None, help="default: $SVBENCH_DATA/train_prompts, else svbench/data/train_prompts")
    ap.add_argument("--fixed", action="store_true", help="tokenise the prompt files' own responses; no generation")
    ap.add_argument("--num-prompts", type=int, default=None, help="first N prompts of the shuffled order (default all)")
    ap.add_argument("--shard-size", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=128, help="rows per decode batch (sorted by length within a shard)")
    ap.add_argument("--max-batch-tokens", type=int, default=MAX_BATCH_TOKENS,
                    help="cap on rows x (longest sequence + max-new-tokens) per batch (KV cache: ~23 KB per token)")
    ap.add_argument("--prefill-group", type=int, default=8, help="prompts per prefill forward (1 = row by row)")
    ap.add_argument("--attention", default=DATA_ATTENTION, choices=CHOICES,
                    help="the target's attention path (svbench.attention; a speed knob: results/datagen_speed.md)")
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--max-prompt-tokens", type=int, default=768, help="longer prompts are skipped")
    ap.add_argument("--temperatures", default="0,1.0", help="comma list, cycled over shards; 0 = greedy")
    ap.add_argument("--heldout-permille", type=int, default=20)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--check", action="store_true",
                    help="only check --out's shards against its manifest.json (sha256) and print its totals")
    return ap


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    report_user_errors(print_check if args.check else run, args)


def print_check(args) -> None:
    shards = check_manifest(Path(args.out))["shards"]
    print(f"{args.out}: {len(shards)} shards match manifest.json; {sum(s['rows'] for s in shards):,} rows "
          f"({sum(s['heldout'] for s in shards):,} held out), {sum(s['answer_tokens'] for s in shards):,} answer tokens")


def run(args) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        temperatures = [float(t) for t in str(args.temperatures).split(",")]
    except ValueError:
        raise SvbenchError(f"--temperatures {args.temperatures!r}: expected numbers separated by commas") from None
    if any(t < 0 for t in temperatures) or args.shard_size < 1 or args.batch_size < 1 or args.max_new_tokens < 1 \
            or args.prefill_group < 1 or args.max_batch_tokens < 1 \
            or (args.num_prompts is not None and args.num_prompts < 1):
        raise SvbenchError("temperatures must be >= 0; shard-size, batch-size, max-new-tokens, prefill-group, "
                           "max-batch-tokens, num-prompts >= 1")
    fixed = bool(getattr(args, "fixed", False))
    items = prompt_items(args)
    # the prompt set and its order: shard k holds items [kS, (k+1)S), so changed prompt files must not grow a folder
    prompts_sha256 = prompt_set_sha256(items)
    if args.num_prompts is not None:
        items = items[: args.num_prompts]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = data_settings(args)
    counts = {}  # shard file -> how many prompts of its slice it was generated from
    # shard file -> the speed knobs it was generated with: not settings (they may differ between shards), but they
    # decide bf16 near-tie picks, so each shard records its own (absent for shards generated before session 21)
    knobs = {}
    if (out / "manifest.json").is_file():
        old = read_manifest(out)
        old_settings = {k: v for k, v in old["settings"].items() if k != "check"}  # folders written while --check leaked in
        if old_settings != settings:
            raise SvbenchError(f"{out} was generated with other settings {old['settings']}; use another --out")
        for shard in old["shards"]:  # manifests without per-shard counts: every shard full but the last
            k = int(shard["file"].removeprefix("shard-").removesuffix(".parquet"))
            counts[shard["file"]] = shard.get("prompts", min(args.shard_size, old["num_prompts"] - k * args.shard_size))
            knobs[shard["file"]] = shard.get("generation")
        if old.get("prompts_sha256", prompts_sha256) != prompts_sha256:
            raise SvbenchError(f"{out} was generated from other prompt files (prompt set {old['prompts_sha256']}, "
                               f"now {prompts_sha256}); use another --out")
    pair = load_pair(group_config("pair", args.pair), args.dtype, "cpu", drafter_cls=None, attention=args.attention)
    run_knobs = None if fixed else {  # the attention path that runs (auto resolved), and the threads
        "attention": pair.target.config._attn_implementation, "threads": torch.get_num_threads(),
        **{k: getattr(args, k) for k in ("batch_size", "max_batch_tokens", "prefill_group")}}
    tok, eos = pair.tokenizer, pair.eos_token_ids
    num_shards = (len(items) + args.shard_size - 1) // args.shard_size
    # a shard is (re)generated when missing, or short of its slice: an earlier run had a smaller --num-prompts (or
    # was killed between writing it and the manifest); a smaller N keeps the shards the folder already has
    todo = [k for k in range(num_shards) if not (out / shard_name(k)).is_file()
            or counts.get(shard_name(k), 0) < len(items[k * args.shard_size:(k + 1) * args.shard_size])]
    bar = tqdm(total=sum(len(items[k * args.shard_size:(k + 1) * args.shard_size]) for k in todo), unit="prompt",
               desc="tokenising" if fixed else "generating", file=sys.stderr)
    tokens, start = 0, time.perf_counter()
    for k in todo:
        temperature = None if fixed else temperatures[k % len(temperatures)]
        generator = torch.Generator().manual_seed(args.seed * 100003 + k)
        chunk = list(enumerate(items[k * args.shard_size:(k + 1) * args.shard_size], start=k * args.shard_size))
        encoded = [(i, p, response, build_prompt(tok, "chat", [p.text], [])) for i, (p, response) in chunk]
        encoded = sorted((e for e in encoded if len(e[3]) <= args.max_prompt_tokens), key=lambda e: len(e[3]))
        if fixed:
            answers = [fixed_answer(tok.encode(e[2], add_special_tokens=False), args.max_new_tokens, eos[0])
                       for e in encoded]
            bar.update(len(encoded))
        else:
            answers = generate_all(pair.target, [e[3] for e in encoded], args.max_new_tokens, temperature, eos,
                                   generator, args.batch_size, args.max_batch_tokens, args.prefill_group,
                                   on_done=bar.update)
        rows = []
        for (i, p, _, ids), answer in zip(encoded, answers):
            rows.append({"i": i, "source": p.source, "temperature": temperature, "prompt_len": len(ids),
                         "split": "heldout" if is_heldout(p.text, args.heldout_permille) else "train",
                         "ids": ids + answer})
            tokens += len(answer)
        bar.set_postfix(tok_s=f"{tokens / (time.perf_counter() - start):.0f}")
        bar.update(len(chunk) - len(encoded))
        write_shard(out / shard_name(k), sorted(rows, key=lambda r: r["i"]), pair.target.config.vocab_size)
        counts[shard_name(k)], knobs[shard_name(k)] = len(chunk), run_knobs
        write_manifest(out, settings, counts, prompts_sha256, knobs)
    bar.close()
    write_manifest(out, settings, counts, prompts_sha256, knobs)


def shard_name(k: int) -> str:
    return f"shard-{k:05d}.parquet"


def write_manifest(out: Path, settings: dict, counts: dict[str, int], prompts_sha256: str,
                   knobs: dict[str, dict | None] | None = None) -> None:
    """Every shard on disk with its sha256, row/held-out/answer-token counts, `prompts` (the prompts of its
    slice it was generated from; 0 when unknown) and, where known, `generation` (the speed knobs that
    generated it: attention path, batch size, ...); num_prompts = their sum."""
    import pyarrow.parquet as pq

    shards = []
    for shard in sorted(out.glob(SHARD_GLOB)):
        table = pq.read_table(shard, columns=["split", "prompt_len", "ids"]).to_pydict()
        shards.append({"file": shard.name, "sha256": shard_sha256(shard),
                       "rows": len(table["split"]), "heldout": table["split"].count("heldout"),
                       "answer_tokens": sum(len(ids) - n for ids, n in zip(table["ids"], table["prompt_len"])),
                       "prompts": counts.get(shard.name, 0)})
        if (knobs or {}).get(shard.name):
            shards[-1]["generation"] = knobs[shard.name]
    manifest = {"settings": settings, "num_prompts": sum(s["prompts"] for s in shards), "prompts_sha256": prompts_sha256,
                "shards": shards,
                "hash": hashlib.sha256(json.dumps([s["sha256"] for s in shards]).encode()).hexdigest()[:16]}
    tmp = out / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2))
    tmp.replace(out / "manifest.json")


if __name__ == "__main__":
    main()
