"""Acceptance rules (ALGORITHMS.md §2 and §4). One entry point, ``verify``, for chains and trees.

Both rules walk the tree from the root: at each node, pick the child the target agrees with, descend,
and stop at the first node where no child is accepted, emitting one token from the target there
(the correction, or the bonus token at a leaf). Output: the accepted node indices and that token.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from svbench.decoding.tree import DraftTree


@dataclass(frozen=True)
class Sampling:
    """temperature 0 = greedy. The same warping is applied to p (target) and q (draft)."""
    temperature: float = 0.0
    top_k: int = 0      # 0 = off
    top_p: float = 1.0  # 1 = off

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def warp(logits: torch.Tensor, sampling: Sampling) -> torch.Tensor:
    """logits (..., V) -> probabilities (..., V) in float32 after temperature, top-k and top-p."""
    logits = logits.float() / sampling.temperature
    if sampling.top_k > 0:
        kth = torch.topk(logits, min(sampling.top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if sampling.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
        mass_before = sorted_probs.cumsum(-1) - sorted_probs  # keep a token while the mass before it < top_p
        sorted_probs = sorted_probs.masked_fill(mass_before >= sampling.top_p, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


def _sample(probs: torch.Tensor, generator: torch.Generator | None) -> int:
    return int(torch.multinomial(probs, 1, generator=generator))


def _uniform(generator: torch.Generator | None) -> float:
    device = generator.device if generator is not None else None  # a CUDA generator needs a CUDA tensor
    return float(torch.rand((), generator=generator, device=device))


def verify_greedy(tree: DraftTree, target_logits: torch.Tensor) -> tuple[list[int], int]:
    """Longest root-to-node path whose tokens equal the target argmax, then the target's own argmax."""
    target_argmax = target_logits.argmax(-1).tolist()  # (n,)
    if tree.is_chain:  # fast path: y_i == argmax p_{i-1}
        accepted = 0
        while accepted < tree.num_drafted and tree.tokens[accepted + 1] == target_argmax[accepted]:
            accepted += 1
        return list(range(1, accepted + 1)), target_argmax[accepted]
    children, node, path = tree.children(), 0, []
    while True:
        match = [c for c in children[node] if tree.tokens[c] == target_argmax[node]]
        if not match:
            return path, target_argmax[node]
        node = match[0]
        path.append(node)


def verify_sampling(tree: DraftTree, target_probs: torch.Tensor, generator=None) -> tuple[list[int], int]:
    """Exact speculative sampling on a tree; target_probs (n, V) are already warped.

    Sampled chain (tree.draft_probs set): accept y with prob min(1, p(y)/q(y)); on rejection sample
    norm(max(0, p - q)). Deterministic candidates (greedy drafts, top-k siblings): try the children in
    order, accept x with prob p(x) under the current residual p; on rejection set p(x) = 0 and
    renormalise; if every child fails sample from the residual. Both leave the output ~ p exactly.
    """
    children, node, path = tree.children(), 0, []
    while True:
        p = target_probs[node]
        kids = children[node]
        if not kids:
            return path, _sample(p, generator)  # bonus token from p
        if tree.draft_probs is not None:
            (child,) = kids  # a sampled draft is a chain
            y, q = tree.tokens[child], tree.draft_probs[child]
            if _uniform(generator) * float(q[y]) < float(p[y]):  # u < p(y)/q(y), no division by 0
                node = child
                path.append(child)
                continue
            residual = (p - q).clamp_min(0.0)  # norm(max(0, p - q))
            total = float(residual.sum())
            return path, _sample(residual / total if total > 0 else p, generator)
        p = p.clone()
        accepted_child = None
        for child in kids:
            x = tree.tokens[child]
            if _uniform(generator) < float(p[x]):  # accept with prob p(x) under the current residual
                accepted_child = child
                break
            p[x] = 0.0  # rejected: remove x and renormalise
            p /= p.sum()
        if accepted_child is None:
            return path, _sample(p, generator)
        node = accepted_child
        path.append(accepted_child)


def verify(tree: DraftTree, target_logits: torch.Tensor, sampling: Sampling, generator=None):
    if sampling.greedy:
        return verify_greedy(tree, target_logits)
    return verify_sampling(tree, warp(target_logits, sampling), generator)
