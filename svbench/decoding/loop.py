"""generate(): prefill -> [draft -> verify -> accept -> policy update]*. AR is the same loop with no drafter.

The prefill forward emits the first new token (recorded as a round with no draft); every later round
is one target forward over root + drafts, where the root is the last emitted token.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from svbench.decoding.target import TargetRunner
from svbench.decoding.tree import DraftTree
from svbench.decoding.verify import Sampling, verify


@dataclass
class Round:
    drafted: int        # draft tokens proposed (tree nodes without the root)
    accepted: int       # draft tokens accepted (the emitted target token is not counted) = accepted depth
    draft_s: float
    verify_s: float
    draft_entropy: list[float]
    steps: int = 0      # draft steps: tokens for a chain, levels for a tree (the length policy's unit)


@dataclass
class Generation:
    ids: list[int]      # new token ids, EOS included when hit
    rounds: list[Round] = field(default_factory=list)
    wall_time: float = 0.0
    hit_eos: bool = False


def clock(device: torch.device) -> float:
    """A timestamp after all queued device work finished (device-synchronised timing)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


@torch.inference_mode()
def generate(target_model, prompt_ids: list[int], max_new_tokens: int, drafter=None, policy=None,
             sampling: Sampling = Sampling(), eos_ids=(), ignore_eos: bool = False, generator=None) -> Generation:
    device = target_model.device
    eos = set() if ignore_eos else set(eos_ids)
    ids, out = list(prompt_ids), Generation(ids=[])
    start = clock(device)
    target = TargetRunner(target_model, capacity=len(ids) + max_new_tokens + 64)  # grows if a tree needs more
    fallback = policy.ar_fallback if drafter is not None else None  # None unless ar_fallback.enabled
    if drafter is not None:
        drafter.reset(target)  # GliDe reads target.cache, EAGLE target.new_features
        policy.reset()
        if fallback is not None:
            fallback.reset()
    prefill_logits = target.prefill(ids)                                   # (1, V) after the prompt
    _, first = verify(DraftTree.chain(ids[-1], []), prefill_logits, sampling, generator)
    emitted, path = [first], []                                            # the prefill emits token 1
    this_round = Round(0, 0, 0.0, clock(device) - start, [])
    while True:
        for j, token in enumerate(emitted[: max_new_tokens - len(out.ids)]):
            out.ids.append(token)
            if token in eos:  # stop there: drafts after an accepted EOS do not count as accepted
                out.hit_eos = True
                path = path[:j]
                break
        this_round.accepted = len(path)
        out.rounds.append(this_round)
        if out.hit_eos or len(out.ids) >= max_new_tokens:
            break
        ids.extend(emitted)                                                # ids[-1]: the root, not in the cache
        budget = max_new_tokens - len(out.ids)                             # a round emits at most drafted + 1
        t0 = clock(device)
        if drafter is None:
            tree = DraftTree.chain(ids[-1], [])
        else:  # draft length 0 (a target-only round) when the fallback says drafting does not pay now
            max_len = min(policy.max_len, budget - 1) if fallback is None or fallback.draft_now() else 0
            tree = drafter.get_candidates(ids, policy, max_len, sampling, generator)
        t1 = clock(device)
        target_logits = target.forward_tree(tree)                             # (n, V), one forward
        path, next_token = verify(tree, target_logits, sampling, generator)  # accepted nodes + 1 target token
        target.keep_path(tree, path)                                         # cache: prefix + root + path
        emitted = [tree.tokens[i] for i in path] + [next_token]
        t2 = clock(device)
        if drafter is not None:
            drafter.update_candidate_strategy(tree, path)
            policy.update(tree.steps, len(path))  # one unit: draft steps (tokens / levels) and accepted depth
            if fallback is not None:
                fallback.update(tree.steps > 0, len(emitted), t2 - t0, t2 - t1)
        this_round = Round(tree.num_drafted, len(path), t1 - t0, t2 - t1, tree.draft_entropy, tree.steps)
    out.wall_time = clock(device) - start
    return out
