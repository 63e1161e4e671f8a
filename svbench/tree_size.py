"""EAGLE-2's tree size tuned to the machine (method.drafter.total_token=auto), like EAGLE's total_token=-1.

Expected tokens per second of a tree of n nodes (root included) = (1 + acc(n)) / (t_draft + t_verify(n)):
  t_verify(n)  median time of ONE target forward over an n-node tree after a 256-token prefix, measured
               here for every candidate n (on this CPU 32 tree tokens cost ~1.6x one token, on a GPU ~1x);
  acc(n)       mean accepted draft tokens per round if the tree kept only its n-1 best-scored nodes,
               measured from greedy calibration runs with the largest candidate: the kept set is
               ancestor-closed and top-k siblings are distinct, so the accepted path of the smaller tree
               is the prefix of the big tree's accepted path whose nodes all rank below n-1 (exact under
               greedy decoding, for the same round);
  t_draft      mean drafting time per round in the same runs (it does not depend on n: the frontier
               expansion is the same, only the final rerank cut changes).
The result and its measurements are cached per machine, model, dtype, device, top_k and depth in
$SVBENCH_CACHE/tree_size.json (default ~/.cache/svbench); delete an entry to re-measure.
"""
from __future__ import annotations

import json
import statistics
import sys
import time

import torch

from svbench.decoding.loop import clock, generate
from svbench.decoding.policies import FixedPolicy
from svbench.decoding.target import TargetRunner
from svbench.decoding.tree import DraftTree
from svbench.environment import environment
from svbench.models import cache_root

CANDIDATES = (4, 6, 8, 12, 16, 24, 32, 48, 60)
CALIBRATION_TOPICS = ("Explain how a hash map works.", "Write a short story about a lighthouse keeper.",
                      "What are the health benefits of walking every day?", "Summarize the causes of inflation.")


def binary_tree(vocab_size: int, n: int) -> DraftTree:
    """An n-node binary tree of random tokens (node i's parent (i - 1) // 2): never the chain fast path."""
    parents = [-1] + [max(0, (i - 1) // 2) for i in range(1, n)]
    return DraftTree.from_parents(torch.randint(0, vocab_size, (n,)).tolist(), parents)


@torch.inference_mode()
def verify_ms(model, n: int, prefix: int = 256, reps: int = 5) -> float:
    """Median ms of one target forward over an n-node (non-chain) tree after `prefix` cached tokens."""
    device = model.device
    cache = TargetRunner(model)
    cache.prefill(torch.randint(0, model.config.vocab_size, (prefix,)).tolist())
    tree = binary_tree(model.config.vocab_size, n)
    times = []
    for _ in range(reps + 1):
        start = clock(device)
        cache.forward_tree(tree)
        times.append(clock(device) - start)
        cache.cache.crop(-n)
    return statistics.median(times[1:]) * 1000  # the first call warms up


def calibrate(pair, drafter_factory, prompts: list[list[int]], max_new_tokens: int = 64) -> dict:
    big = max(CANDIDATES)
    drafter = drafter_factory(big)
    drafter.record_ranks = True
    draft_s, rounds = 0.0, 0
    for prompt in prompts:
        out = generate(pair.target, prompt, max_new_tokens, drafter, FixedPolicy(40), eos_ids=pair.eos_token_ids)
        draft_s += sum(r.draft_s for r in out.rounds[1:])
        rounds += len(out.rounds) - 1
    paths = drafter.accepted_ranks
    acc = {}
    for n in CANDIDATES:
        kept = [next((j for j, r in enumerate(path) if r >= n - 1), len(path)) for path in paths]
        acc[n] = statistics.fmean(kept) if kept else 0.0
    return {"acc": acc, "draft_ms": 1000 * draft_s / max(1, rounds), "rounds": rounds}


def tuned_total_token(pair, top_k: int, depth: int, prompts: list[list[int]] | None = None) -> int:
    from svbench.decoding.drafters.eagle import EagleDrafter

    env = environment(str(pair.target.device))
    key = "|".join(str(x) for x in (env["gpu"] or env["cpu"], env["torch_threads"], pair.name,
                                    pair.target.config.num_hidden_layers, pair.target.dtype,
                                    pair.target.device, top_k, depth)) \
        + (f"|head layers {len(pair.network.layers)}" if len(pair.network.layers) != 1 else "")  # 1: the old keys
    path = cache_root() / "tree_size.json"
    table = json.loads(path.read_text()) if path.is_file() else {}
    if key in table:
        return int(table[key]["total_token"])
    print(f"tuning EAGLE-2 total_token for {key} (once; cached in {path})", file=sys.stderr)
    if prompts is None:
        from svbench.benchmarks import build_prompt
        prompts = [build_prompt(pair.tokenizer, "chat", [t], []) for t in CALIBRATION_TOPICS]
    start = time.perf_counter()
    verify = {n: verify_ms(pair.target, n) for n in CANDIDATES}
    measured = calibrate(pair, lambda n: EagleDrafter(pair.network, top_k, depth, n), prompts)
    tokens_per_s = {n: (1 + measured["acc"][n]) / ((measured["draft_ms"] + verify[n]) / 1000) for n in CANDIDATES}
    best = max(CANDIDATES, key=lambda n: tokens_per_s[n])
    table[key] = {"total_token": best, "verify_ms": verify, "acc": measured["acc"], "draft_ms": measured["draft_ms"],
                  "calibration_rounds": measured["rounds"], "tokens_per_s": tokens_per_s,
                  "seconds": time.perf_counter() - start}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(table, indent=2, default=str))
    tmp.replace(path)
    print(f"total_token={best}: " + ", ".join(f"{n}: {tokens_per_s[n]:.1f} tok/s" for n in CANDIDATES), file=sys.stderr)
    return best
