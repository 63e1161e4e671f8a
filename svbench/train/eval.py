"""Held-out evaluation of a draft: per-position acceptance, tau at gamma = 1..8, draft/target cost ratio.

    python -m svbench.train.eval --draft drafts/smollm2-draft-lm --data train_data/smollm2 [--spec-bench 24]
    python -m svbench.train.eval --method glide --draft drafts/smollm2-135m-glide ...   (GliDe chain)
    python -m svbench.train.eval --method eagle2 --draft drafts/smollm2-135m-eagle ...  (EAGLE-2 tree)
    python -m svbench.train.eval compare A.json B.json   (draft B against draft A on the same starts, paired)

--method names a conf/method/<name>.yaml; its drafter class (the registry) says which pair entry holds the
network (``Drafter.network``) and is built with its own defaults (``from_pair(pair)``: EAGLE-2's official
tree for eagle2 and eagle3, a chain for the others), so every method is evaluated the same way.

For GliDe and EAGLE the target is prefilled with the context before each start (they read its cache or
features). For EAGLE-2 the draft is a tree (top_k 10, depth 5, 60 nodes: the official defaults): L = the
longest root path matching the target's continuation; tau(gamma) then caps that path at gamma levels.

Greedy acceptance is measured against greedy target text: the held-out greedy answers of the
generated data (the target's own argmax continuations) and, with --spec-bench N, target greedy answers
to N // 6 Spec-Bench first turns per category generated here. From sampled start positions in those answers the draft
proposes 8 tokens greedily; accepted length L = the longest prefix equal to the target's continuation.
tau(gamma) = 1 + E[min(L, gamma)] (the expected tokens per round of fixed-gamma SD, greedy).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
import statistics
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from svbench.benchmarks import build_prompt, load_benchmark
from svbench.decoding.drafters import drafter_class
from svbench.decoding.drafters.draft_model import DraftModelDrafter
from svbench.decoding.kv_cache import StaticKVCache
from svbench.decoding.target import TargetRunner
from svbench.decoding.policies import FixedPolicy
from svbench.decoding.verify import Sampling
from svbench.config import group_config
from svbench.draft_folder import read_config
from svbench.errors import SvbenchError, report_user_errors
from svbench.models import load_pair
from svbench.train.data import generate_all, read_shards

GAMMA_MAX = 8


@torch.inference_mode()
def matched_length(tree, reference: list[int]) -> int:
    """The longest root path whose tokens equal the reference continuation (greedy acceptance)."""
    children, node, depth = tree.children(), 0, 0
    while depth < len(reference):
        node = next((c for c in children[node] if tree.tokens[c] == reference[depth]), None)
        if node is None:
            break
        depth += 1
    return depth


@torch.inference_mode()  # no autograd graph: a drafter's cache would otherwise chain every start's graph (OOM)
def accepted_lengths(drafter, sequences: list[tuple[list[int], int]], starts_per_seq: int,
                     rng: random.Random, target_model=None) -> tuple[list[list[int]], list[int]]:
    """For (ids, answer_start) pairs: greedy drafts of up to GAMMA_MAX levels from random answer positions.
    target_model: prefill it with the context first (drafters that read the target).
    Returns (starts, lengths): starts[i] = [sequence index, root position] of lengths[i]. The positions come
    from rng alone, so two drafts evaluated with the same seed and data get the same starts (paired)."""
    starts, lengths = [], []
    for s, (ids, answer_start) in enumerate(tqdm(sequences, desc="drafting", unit="seq", file=sys.stderr,
                                                 leave=False)):
        positions = list(range(answer_start, len(ids) - GAMMA_MAX))
        roots = sorted(rng.sample(positions, min(starts_per_seq, len(positions))))
        starts += [[s, t] for t in roots]
        lengths += lengths_at(drafter, ids, roots, target_model)
    return starts, lengths


@torch.inference_mode()
def lengths_at(drafter, ids: list[int], starts: list[int], target_model=None) -> list[int]:
    """Greedy acceptance L of a GAMMA_MAX-level draft whose root is ids[t], for each t in starts: the longest
    prefix of the draft (tree path) equal to ids[t+1:] (up to GAMMA_MAX tokens)."""
    lengths = []
    for t in starts:
        target = None if target_model is None else TargetRunner(target_model)
        drafter.reset(target)  # before the prefill: EAGLE-3 sets which features the target hands over
        if target is not None:
            target.prefill(ids[:t])  # everything before the root ids[t]
        tree = drafter.get_candidates(ids[: t + 1], FixedPolicy(GAMMA_MAX), GAMMA_MAX, Sampling())
        lengths.append(matched_length(tree, ids[t + 1: t + 1 + GAMMA_MAX]))
    return lengths


def round_roots(rounds: list[tuple[int, int, int]], prompt_len: int) -> list[tuple[int, int, int]]:
    """An engine run's drafting rounds as (root index in prompt + new ids, steps, accepted), from its rounds'
    (drafted, accepted, steps) in order. A round emits accepted + 1 tokens; one that drafted nothing (the
    prefill's; a target-only round) emits 1 and has no root here. Feeding the roots to lengths_at re-measures
    the engine's acceptance (experiments/eval_vs_engine.py)."""
    emitted, out = 0, []
    for drafted, accepted, steps in rounds:
        if drafted:
            out.append((prompt_len + emitted - 1, steps, accepted))  # the root: the last token emitted so far
        emitted += accepted + 1
    return out


def tau_at(lengths: list[int], gamma: int) -> float:
    """tau(gamma) = 1 + E[min(L, gamma)]: the expected tokens per round of fixed-gamma SD (greedy)."""
    return 1 + statistics.fmean(min(n, gamma) for n in lengths)


def acceptance_stats(lengths: list[int], levels: int = GAMMA_MAX, starts: list[list[int]] | None = None) -> dict:
    """tau(gamma) and the per-position acceptance; None where no start reached a position or the drafter has
    fewer than GAMMA_MAX levels (the EAGLE-2 tree: depth + 1), so an undrafted position is not read as 0.00.
    The per-start lengths (and starts, when given) are kept so two drafts can be compared paired (compare_evals)."""
    per_position = []
    for i in range(GAMMA_MAX):  # P(position i+1 accepted | positions 1..i accepted)
        reached = sum(1 for n in lengths if n >= i)
        per_position.append(sum(1 for n in lengths if n >= i + 1) / reached if reached and i < levels else None)
    if not lengths:
        raise SvbenchError(f"no draft starts: every answer is shorter than {GAMMA_MAX + 1} tokens")
    tau = {g: tau_at(lengths, g) for g in range(1, GAMMA_MAX + 1)}
    out = {"n_starts": len(lengths), "per_position_acceptance": per_position, "tau": tau, "lengths": list(lengths)}
    return out if starts is None else {**out, "starts": starts}


@torch.inference_mode()
def forward_ms(model, n_tokens: int = 1, context: int = 200, reps: int = 20, vocab_ids=None) -> float:
    """Median time of one cached forward of n_tokens (with the head the drafter uses)."""
    cache = StaticKVCache(model.config.num_hidden_layers)
    vocab_size = model.config.vocab_size
    model(input_ids=torch.randint(0, vocab_size, (1, context)), cache=cache, use_cache=True, logits_to_keep=1)
    drafter = DraftModelDrafter(model, vocab_ids) if vocab_ids is not None else None
    times = []
    for _ in range(reps):
        ids = torch.randint(0, vocab_size, (1, n_tokens))
        start = time.perf_counter()
        if drafter is None:
            model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1)
        else:
            hidden = model.model(input_ids=ids, cache=cache, use_cache=True).last_hidden_state
            hidden[0, -1] @ drafter.head.T
        times.append(time.perf_counter() - start)
        cache.crop(-n_tokens)
    return statistics.median(times) * 1000


@torch.inference_mode()
def drafting_step_ms(drafter, target_model, vocab_size: int, context: int = 200, reps: int = 10) -> float:
    """Median time per drafted level of a 5-level greedy round after `context` tokens (GliDe: one token
    per level; EAGLE-2: one head forward over the frontier per level, plus the rerank)."""
    ids = torch.randint(0, vocab_size, (context + 1,)).tolist()
    times = []
    for _ in range(reps + 1):
        target = TargetRunner(target_model)
        drafter.reset(target)
        target.prefill(ids[:-1])
        start = time.perf_counter()
        tree = drafter.get_candidates(ids, FixedPolicy(5), 5, Sampling())
        times.append((time.perf_counter() - start) / max(tree.depths))
    return statistics.median(times[1:]) * 1000


def read_eval(path) -> dict:
    """An eval JSON written by run(); one-line errors for a missing or unreadable file."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise SvbenchError(f"no eval JSON at {path}") from None
    except (OSError, ValueError) as exc:
        raise SvbenchError(f"{path}: not a readable eval JSON ({exc})") from None


def sequences_sha(sequences: list[list[int]]) -> str:
    """A short hash of the token sequences a split's starts index: two evals are paired only on the same text."""
    return hashlib.sha256(json.dumps(sequences).encode()).hexdigest()[:16]


def compare_evals(a: dict, b: dict, name_a: str = "a", name_b: str = "b") -> tuple[list[dict], list[str]]:
    """b against a on the starts both were measured on (same seed, data, counts and text: the same starts), per
    split and gamma: tau_a, tau_b, tau_diff = tau_b - tau_a with its 95% BCa interval (the starts of one sequence
    resampled together, a and b paired) and a verdict (analysis.metrics.verdict, on the sequence count).
    Returns (rows, notes): a split in one file only, or measured on other starts or other text (e.g. Spec-Bench
    answers the target generated in another dtype), is skipped with a note; a split whose text cannot be checked
    (an eval JSON without sequences_sha) is paired on its starts with a note. None paired is an error."""
    from svbench.analysis.metrics import verdict
    from svbench.results import bootstrap_ci

    rows, notes = [], []
    for split in ("heldout", "spec_bench"):
        if (split in a) != (split in b):
            notes.append(f"skipped {split}: only in {name_a if split in a else name_b}")
        if split not in a or split not in b:
            continue
        ea, eb = a[split], b[split]
        for e, name in ((ea, name_a), (eb, name_b)):
            if "starts" not in e:
                raise SvbenchError(f"{name}: its {split} results hold no per-start lengths (an eval JSON from "
                                   "before they were stored); re-run python -m svbench.train.eval")
            if len(e["starts"]) != len(e["lengths"]):
                raise SvbenchError(f"{name}: {split} has {len(e['starts'])} starts but {len(e['lengths'])} lengths")
        shas = ea.get("sequences_sha"), eb.get("sequences_sha")
        if ea["starts"] != eb["starts"] or (None not in shas and shas[0] != shas[1]):
            notes.append(f"skipped {split}: measured on different starts or text (seed, data, counts, or target "
                         "answers of another dtype or target differ): not paired")
            continue
        if None in shas:
            notes.append(f"{split}: paired on its starts; the text is unchecked (no sequences_sha in "
                         f"{name_a if shas[0] is None else name_b})")
        clusters = [s for s, _ in ea["starts"]]
        for g in range(1, GAMMA_MAX + 1):
            values = [[min(x, g), min(y, g)] for x, y in zip(ea["lengths"], eb["lengths"])]  # (starts, 2)
            ci = bootstrap_ci(values, lambda m: m[..., 1] - m[..., 0], clusters)
            tau_a, tau_b = tau_at(ea["lengths"], g), tau_at(eb["lengths"], g)
            rows.append({"split": split, "gamma": g, "starts": len(values), "seqs": len(set(clusters)),
                         "tau_a": tau_a, "tau_b": tau_b, "tau_diff": tau_b - tau_a, "tau_diff_ci": ci,
                         "verdict": None if ci is None else verdict(ci, len(set(clusters)))})
    if not rows:
        raise SvbenchError(f"{name_a} and {name_b}: no split to pair; " + ("; ".join(notes) or
                                                                           "neither has heldout or spec_bench"))
    return rows, notes


def compare_main(argv) -> None:
    ap = argparse.ArgumentParser(prog="python -m svbench.train.eval compare",
                                 description="Draft B against draft A on the same eval starts: tau(gamma) of each, "
                                             "the difference B - A with its 95% interval and a verdict.")
    ap.add_argument("a", metavar="A", help="eval JSON (svbench.train.eval --out)")
    ap.add_argument("b", metavar="B", help="eval JSON of the draft compared against A, same seed and data")

    def compare(args):
        import pandas as pd

        from svbench.analysis.tables import markdown

        rows, notes = compare_evals(read_eval(args.a), read_eval(args.b), args.a, args.b)
        for line in notes:
            print(f"svbench: {line}", file=sys.stderr)
        frame = pd.DataFrame(rows).rename(columns={"verdict": "tau_verdict"})
        print(markdown(frame, f"b = {args.b} against a = {args.a}: tau = 1 + mean min(L, gamma) over the same "
                              "starts; tau_diff = b - a with its 95% BCa bootstrap interval (a sequence's starts "
                              "resampled together)."), end="")
    report_user_errors(compare, ap.parse_args(argv))


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["compare"]:
        return compare_main(argv[1:])
    ap = argparse.ArgumentParser(description="Held-out acceptance and cost of a draft "
                                             "('python -m svbench.train.eval compare -h': two drafts, paired).")
    ap.add_argument("--pair", default="smollm2", help="conf/pair/<name>.yaml (target + the draft to evaluate)")
    ap.add_argument("--method", default="vanilla_sd",
                    help="conf/method/<name>.yaml whose network is evaluated: vanilla_sd (draft LM, chain), glide "
                         "(chain), eagle2 / eagle3 (head, EAGLE-2 official tree)")
    ap.add_argument("--draft", default=None, help="a draft folder (overrides the pair's entry for the method's network)")
    ap.add_argument("--layercut", type=int, default=None, help="evaluate a layer-cut draft instead")
    ap.add_argument("--data", nargs="+", default=["train_data/smollm2"], help="generated data folder(s) with a held-out split")
    ap.add_argument("--heldout-seqs", type=int, default=60)
    ap.add_argument("--spec-bench", type=int, default=0,
                    help="also Spec-Bench first turns: N // 6 questions per category (at least 1 each when N > 0)")
    ap.add_argument("--starts-per-seq", type=int, default=8)
    ap.add_argument("--full-vocab", action="store_true", help="ignore the draft's reduced vocabulary")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--out", default=None, help="write the results JSON here (default: <draft>/eval.json)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--write-card", action="store_true", help="(re)write <draft>/README.md from train_meta + results")
    report_user_errors(run, ap.parse_args(argv))


def run(args) -> dict:
    if args.heldout_seqs < 1 or args.starts_per_seq < 1 or args.spec_bench < 0:
        raise SvbenchError("--heldout-seqs and --starts-per-seq must be >= 1, --spec-bench >= 0")
    if args.draft and args.layercut:
        raise SvbenchError("give --draft or --layercut, not both (the results would be written to the draft's folder)")
    if getattr(args, "write_card", False):  # checked before the long eval, not after it
        if not args.draft or args.full_vocab:
            raise SvbenchError("--write-card needs --draft and describes the draft as shipped (not with --full-vocab)")
        if not (Path(args.draft) / "train_meta.json").is_file():
            raise SvbenchError(f"--write-card: {args.draft} has no train_meta.json (written by python -m svbench.train)")
    pair_cfg = group_config("pair", args.pair)
    method = getattr(args, "method", "vanilla_sd")
    drafter_cls = drafter_class(group_config("method", method))
    kind = getattr(drafter_cls, "network", None)  # the pair entry
    if kind is None:
        raise SvbenchError(f"--method {method}: this method has no network to evaluate")
    if args.draft:
        pair_cfg[kind] = {"source": "trained", "path": args.draft, "reduced_vocab": not args.full_vocab}
    if args.layercut:
        pair_cfg["draft"] = {"source": "layercut", "num_layers": args.layercut}
    pair = load_pair(pair_cfg, args.dtype, "cpu", drafter_cls=drafter_cls)
    vocab = None if args.full_vocab else pair.vocab_subset
    drafter = drafter_cls.from_pair(pair)
    reads_target = None if kind == "draft" else pair.target  # GliDe and EAGLE read the target's cache / features
    # one generator per set, so the Spec-Bench starts do not depend on how many held-out answers came first
    rng, spec_rng = random.Random(args.seed), random.Random(f"spec_bench-{args.seed}")
    results = {"method": method, "kind": kind, "draft": args.draft or pair_cfg[kind], "dtype": args.dtype,
               "vocab": len(vocab) if vocab else pair.target.config.vocab_size}
    folders = [args.data] if isinstance(args.data, str) else args.data
    heldout = [r for f in folders for r in read_shards(Path(f), split="heldout") if r["temperature"] == 0.0]
    heldout = heldout[: args.heldout_seqs]
    if not heldout:
        raise SvbenchError(f"no greedy held-out answers in {folders}; generate data with a temperature-0 shard")
    levels = min(GAMMA_MAX, drafter.depth + 1) if hasattr(drafter, "depth") else GAMMA_MAX  # tree levels
    starts, lengths = accepted_lengths(drafter, [(r["ids"], r["prompt_len"]) for r in heldout], args.starts_per_seq,
                                       rng, reads_target)
    results["heldout"] = acceptance_stats(lengths, levels, starts)
    results["heldout"].update(n_seqs=len(heldout), sequences_sha=sequences_sha([r["ids"] for r in heldout]))
    if args.spec_bench:
        spec = group_config("benchmark", "spec_bench")
        per_category = max(1, args.spec_bench // 6)
        questions = load_benchmark({**spec, "limit": per_category, "turns": "first"})
        prompts = [build_prompt(pair.tokenizer, "chat", [q.turns[0]], []) for q in questions]
        answers = generate_all(pair.target, prompts, 128, 0.0, pair.eos_token_ids, batch_size=8)
        seqs = [(p + a, len(p)) for p, a in zip(prompts, answers)]
        starts, lengths = accepted_lengths(drafter, seqs, args.starts_per_seq, spec_rng, reads_target)
        results["spec_bench"] = acceptance_stats(lengths, levels, starts)
        results["spec_bench"].update(n_seqs=len(seqs), sequences_sha=sequences_sha([ids for ids, _ in seqs]))
    target_ms = forward_ms(pair.target)
    draft_ms = forward_ms(pair.network, vocab_ids=vocab) if kind == "draft" else \
        drafting_step_ms(drafter, pair.target, pair.network.config.vocab_size)
    results["cost"] = {"target_forward_ms": target_ms, "draft_forward_ms": draft_ms, "ratio": draft_ms / target_ms,
                       "threads": torch.get_num_threads()}
    out = Path(args.out) if args.out else (Path(args.draft) / "eval.json" if args.draft else None)
    if out:  # written whole, then renamed: a killed eval leaves no torn JSON for a resuming script to keep
        out.with_suffix(".tmp").write_text(json.dumps(results, indent=2))
        out.with_suffix(".tmp").replace(out)
    print(json.dumps({k: ({n: x for n, x in v.items() if n not in ("starts", "lengths")} if isinstance(v, dict) else v)
                      for k, v in results.items()}, indent=2))  # the per-start lists are in the file only
    if getattr(args, "write_card", False):
        write_card(Path(args.draft), results, " ".join(["python -m svbench.train.eval"] + sys.argv[1:]))
    return results


def write_card(folder: Path, results: dict, command: str) -> None:
    """The draft's model card: how it was trained and what it measured."""
    meta = json.loads((folder / "train_meta.json").read_text())
    cfg = meta["config"]

    def taus(section):
        return ", ".join(f"{results[section]['tau'][g]:.2f}" for g in sorted(results[section]['tau'], key=int))

    def positions(section):
        return ", ".join(f"{a:.2f}" if a is not None else "-" for a in results[section]["per_position_acceptance"])

    recipe = meta["recipe"]
    # the exported head's own layer count (train_meta.json configs before session 28 carry an unused num_layers: 2)
    layers = read_config(folder, "an EAGLE head").get("num_hidden_layers", 1) if recipe == "eagle" else None
    what = {
        "draft_lm": (f"draft LM ({cfg['num_layers']} layers)", "A vanilla-SD draft (`method=vanilla_sd`)",
                     f"{cfg['num_layers']} decoder layers at width 576, initialised from target layers "
                     f"{list(cfg['init_layers'])}; loss: " + ("soft cross-entropy to the target's next-token "
                     "distribution" if cfg.get("soft_labels", True) else "cross-entropy on the answer tokens")
                     + " at every answer position (greedy and T=1 answers)"),
        "glide": (f"GliDe draft ({cfg['num_layers']} layers)", "A GliDe draft (`method=glide`, `glide_cape`) whose "
                  "layers cross-attend to the target's KV cache of its top layers",
                  f"{cfg['num_layers']} GliDe layers at width 576 (self-attention, cross-attention to target "
                  f"layers L_T - L_D + i, MLP), initialised from {cfg.get('init_from') or 'the target first layers'} "
                  f"with a silent cross-attention; loss: soft cross-entropy to the target's distribution, stale-cache "
                  f"block mask of {cfg.get('block_size')}"),
        "eagle": ("EAGLE head", "An EAGLE-1/2 head (`method=eagle2`) over the target's final-normed features",
                  f"FC(2d->d) + {layers} decoder layer{'s' if layers != 1 else ''}, "
                  + (f"continues the trained head in `{cfg['init_from']}` (init_from; a new warm-up and cosine)"
                     if cfg.get("init_from") else "starts as the identity") + "; "
                  f"loss: SmoothL1 on the next feature + "
                  f"{cfg.get('ce_weight')} x soft cross-entropy, U(+-{cfg.get('feature_noise')}) feature noise, "
                  f"{cfg.get('ttt_steps', 1)} unrolled steps weighted {cfg.get('ttt_decay', 0.8)}^j"),
        "eagle3": ("EAGLE-3 head", "An EAGLE-3 head (`method=eagle3`) over the target's layers 2, L//2, L-3",
                   f"FC(3d->d) + 1 decoder layer over [embedding; hidden] + norm + lm_head over the draft vocabulary; "
                   f"loss: soft cross-entropy over {cfg.get('ttt_steps')} unrolled steps weighted "
                   f"{cfg.get('ttt_decay')}^j"),
    }[recipe]
    lines = [
        f"# svbench {what[0]} for SmolLM2-135M-Instruct", "",
        f"{what[1]}, distilled by `python -m svbench.train` from the frozen target on the target's own answers. "
        "Only the draft's own weights are stored (bf16); the embedding" + (
            " is the target's, attached at load time (`pair=smollm2`); the lm_head over the draft vocabulary is the "
            "head's own (trained, mapped to target ids by `d2t`)." if recipe == "eagle3" else
            " and lm_head are the target's, attached at load time (`pair=smollm2`)."), "",
        "## Training", "",
        f"- recipe `{recipe}`: {what[2]}",
        f"- data: {cfg['data']} (manifest hash {meta['data_manifest_hash']}), {meta['train_rows']} training "
        f"answers, {meta['train_answer_tokens']} answer tokens; held-out split by prompt hash"
        + (f"; rows drawn with source_weights {dict(cfg['source_weights'])}" if cfg.get("source_weights") else "")
        + (f" (a resumed run: earlier steps saw the data of manifest(s) {', '.join(meta['data_manifest_hashes'][:-1])})"
           if len(meta.get("data_manifest_hashes", [])) > 1 else ""),
        f"- steps {meta['steps']}, batch {cfg['batch_size']} sequences, lr {cfg['lr']} (cosine), seq_len "
        f"{cfg['seq_len']}, seed {cfg['seed']}, {cfg.get('autocast', 'bfloat16')} autocast"
        + (" (a resumed run whose steps= changed, so its cosine was re-stretched: "
           + ", ".join(f"{s['steps']} steps from step {s['from_step']}" for s in meta["schedule"]) + ")"
           if len(meta.get("schedule", [])) > 1 else ""),
        f"- drafting vocabulary: {meta['vocab_size']} tokens (coverage of training answer tokens: "
        f"{meta['vocab_coverage']})",
        (f"- final training loss (EMA) {meta['final_train_loss_ema']:.3f}, top-1 agreement (EMA) "
         f"{meta['final_train_top1_ema']:.3f}" if meta.get("final_train_loss_ema") is not None
         else "- final training EMAs: not recorded (exported by a re-run of a finished run whose state.pt predates them)"),
        f"- training time: {meta.get('wall_hours', 'not recorded')} h wall on {meta.get('threads', '?')} threads "
        f"(CPU-hours = wall x threads at most)",
        f"- made by: `{meta.get('command', 'not recorded')}`", "",
        f"## Held-out evaluation (greedy, {results.get('dtype', 'bfloat16')}, CPU)", "", f"Command: `{command}`", "",
        *(["For the EAGLE-2 tree (top_k 10, depth 5, 60 nodes) L is the longest matching root path; tau(gamma) caps "
           "it at gamma levels.", ""] if recipe in ("eagle", "eagle3") else []),
        "| set | starts | tau at gamma = 1 .. 8 | per-position acceptance (1..8) |", "|---|---|---|---|",
    ]
    for section in ("heldout", "spec_bench"):
        if section in results:
            lines.append(f"| {section} | {results[section]['n_starts']} | {taus(section)} | {positions(section)} |")
    cost = results["cost"]
    lines += ["", f"Cost: one drafting step {cost['draft_forward_ms']:.2f} ms vs one target forward "
              f"{cost['target_forward_ms']:.2f} ms (1 token, ~200 cached, {cost['threads']} threads): ratio "
              f"{cost['ratio']:.3f}.", ""]
    (folder / "README.md").write_text("\n".join(lines + hand_written_sections(folder / "README.md")))


def hand_written_sections(card: Path) -> list[str]:
    """The sections of an existing card that write_card does not make (e.g. "## Why it ships"), from the first
    such heading on: a re-evaluated draft keeps them (a new export deletes the old card, svbench.train)."""
    if not card.is_file():
        return []
    lines = card.read_text().splitlines()
    made = [i for i, line in enumerate(lines) if line.startswith("## Held-out evaluation")]
    for i in range(made[-1] + 1 if made else len(lines), len(lines)):  # the first section after the made ones
        if lines[i].startswith("## "):
            return lines[i:]
    return []


if __name__ == "__main__":
    main()
