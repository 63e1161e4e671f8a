"""Acceptance rules (ALGORITHMS.md §2 and §4). One entry point, ``verify``, for chains and trees.

Both rules walk the tree from the root: at each node, pick the child the target agrees with, descend,
and stop at the first node where no child is accepted, emitting one token from the target there
(the correction, or the bonus token at a leaf). Output: the accepted node indices and that token.
The walk is computed on the device for all nodes at once (no Python loop over nodes) and read back with
one transfer per round.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

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


def entropy(log_q: torch.Tensor) -> torch.Tensor:
    """H = -sum_v q(v) ln q(v) in nats over the last dim, from log-probabilities (..., V) -> (...)."""
    return -(log_q.exp() * log_q).sum(-1)


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


@lru_cache(maxsize=None)
def _argmax_block(vocab: int) -> int:
    """A block length dividing the vocabulary, 512..2048 (0: none, use torch's argmax)."""
    return next((b for b in range(1024, 2049) if vocab % b == 0), 0) or \
        next((b for b in range(1023, 511, -1) if vocab % b == 0), 0)


def row_argmax(logits: torch.Tensor) -> torch.Tensor:
    """(n, V) -> (n,) the index of each row's first maximum (the same index as ``logits.float().argmax(-1)``).
    On a CPU torch's argmax is a scalar loop (~86 us for (5, 49152) in float32, ~490 us in bf16) and a float32
    copy of fresh logits is memory-bound (~180 us in a real round): instead a vectorised max over blocks of B
    in the logits' own dtype (exact), then argmax over the (n, V/B) block maxima and, in float32, inside
    the winning block (first block holding the maximum, first position in it)."""
    n, vocab = logits.shape
    B = _argmax_block(vocab) if logits.device.type == "cpu" and vocab >= 8192 else 0
    if not B:
        return logits.float().argmax(-1)
    blocks = logits.view(n, vocab // B, B)                      # (n, V/B, B)
    block = blocks.amax(-1).float().argmax(-1)                  # (n,) the first block holding the row max
    inside = blocks[torch.arange(n, device=logits.device), block].float().argmax(-1)  # (n,) first max in it
    return block * B + inside


def uniforms(shape, generator: torch.Generator | None, device) -> torch.Tensor:
    """U[0, 1) draws of `shape` from `generator` (on its own device, so a CPU generator gives the same stream
    whatever the model's device), moved to `device` (a no-op when they are the same)."""
    source = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=source).to(device)


def sample_rows(probs: torch.Tensor, generator: torch.Generator | None = None, block: int = 256) -> torch.Tensor:
    """(n, V) non-negative weights (rows need not sum to 1) -> (n,) one draw per row, by inverse CDF in two
    levels: the first block of `block` tokens whose cumulative mass exceeds u ~ U[0, total), then the token
    inside it. The distribution of torch.multinomial (both cumulate in float32), without its per-row scalar
    loop: for (128, 49152) on this CPU ~1 ms instead of ~100 ms. A zero-weight token is never drawn."""
    n, vocab = probs.shape
    rows = torch.arange(n, device=probs.device)
    blocks = torch.nn.functional.pad(probs.float(), (0, -vocab % block)).view(n, -1, block)  # (n, V/block, block)
    mass = blocks.sum(-1)                                       # (n, V/block)
    cum = mass.cumsum(-1)                                       # (n, V/block)
    u = uniforms((n, 1), generator, probs.device) * cum[:, -1:]  # (n, 1) u ~ U[0, total)
    last = (cum < cum[:, -1:]).sum(-1)                          # (n,) the last block with mass (guards rounding)
    b = torch.minimum((cum <= u).sum(-1), last)                 # (n,) first block with cum > u
    inner = blocks[rows, b].cumsum(-1)                          # (n, block)
    offset = u[:, 0] - (cum[rows, b] - mass[rows, b])           # (n,) u's position inside block b
    j = torch.minimum((inner <= offset[:, None]).sum(-1), (inner < inner[:, -1:]).sum(-1))  # first inner > offset
    return b * block + j


def _deepest(ok: torch.Tensor, depths: torch.Tensor) -> torch.Tensor:
    """(1,) index of the deepest True node; ties go to the lowest index (one root path holds at most one
    node per depth, so there are none when siblings carry distinct tokens)."""
    n = ok.shape[0]
    order = torch.arange(n, 0, -1, device=ok.device)  # n .. 1: an earlier node wins a tie
    return torch.where(ok, depths * (n + 1) + order, -1).argmax().view(1)


def _on_accepted_path(tree: DraftTree, accepted: torch.Tensor) -> torch.Tensor:
    """accepted (n,) bool, node 0 True: is every node from the root down to node i accepted? (n,) bool."""
    return ~(tree.ancestor_matrix(accepted.device) & ~accepted[None]).any(-1)


def _result(tree: DraftTree, last: torch.Tensor, token: torch.Tensor) -> tuple[list[int], int]:
    """ONE device->host transfer: the last accepted node and the emitted token."""
    last, token = torch.cat([last.view(1), token.view(1)]).tolist()
    return (list(range(1, last + 1)) if tree.is_chain else tree.path_to(last)), token


def verify_greedy(tree: DraftTree, target_logits: torch.Tensor) -> tuple[list[int], int]:
    """Longest root-to-node path whose tokens equal the target argmax, then the target's own argmax.
    On the device: node i matches when y_i == argmax p_parent(i); the path ends at the deepest node whose
    ancestors all match."""
    argmax = row_argmax(target_logits)  # (n,)
    if tree.num_drafted == 0:
        return _result(tree, torch.zeros(1, dtype=torch.long, device=argmax.device), argmax[:1])
    tokens, parents, depths = tree.arrays(argmax.device)  # (n,) each
    if tree.is_chain:  # y_i == argmax p_{i-1}; accepted = length of the matching prefix
        last = (tokens[1:] == argmax[:-1]).long().cumprod(0).sum().view(1)
    else:
        match = tokens == argmax[parents]  # (n,)
        match[0] = True  # the root is given
        last = _deepest(_on_accepted_path(tree, match), depths)
    return _result(tree, last, argmax.index_select(0, last))


def verify_sampling(tree: DraftTree, target_probs: torch.Tensor, generator=None) -> tuple[list[int], int]:
    """Exact speculative sampling on a tree; target_probs (n, V) are already warped. All on the device, one
    uniform per node drawn up front (the same law as drawing them one by one), one transfer.

    Sampled chain (tree.draft_probs set): accept y_i with prob min(1, p_{i-1}(y_i)/q_i(y_i)) until the first
    rejection, there sample norm(max(0, p - q)); after a fully accepted chain the bonus token from p.
    Deterministic candidates (greedy drafts, top-k siblings): the children of a node are tried in order,
    child x accepted with prob p(x) under the residual p with the earlier siblings removed, i.e.
    p(x) / (1 - sum of the earlier siblings' p); where every child fails, sample from that residual.
    Both leave the output ~ p exactly.
    """
    n, device = len(tree), target_probs.device
    if tree.num_drafted == 0:
        token = sample_rows(target_probs[:1], generator)  # (1,)
        return _result(tree, torch.zeros(1, dtype=torch.long, device=device), token)
    tokens, parents, depths = tree.arrays(device)  # (n,) each
    u = uniforms(n - 1, generator, device)  # (n-1,) node i's uniform at u[i - 1]
    p_x = target_probs[parents[1:], tokens[1:]]  # (n-1,) p_parent(i)(y_i)
    if tree.draft_probs is not None:
        assert tree.is_chain, "a sampled draft is a chain"
        q = tree.draft_probs  # (n, V): row i = the q node i was sampled from
        accept = u * q[torch.arange(1, n, device=device), tokens[1:]] < p_x  # u < p(y)/q(y), no division by 0
        last = accept.long().cumprod(0).sum().view(1)  # accepted drafts
        p_last = target_probs.index_select(0, last)[0]  # (V,)
        q_next = q.index_select(0, (last + 1).clamp(max=n - 1))[0]  # the rejected draft's q (unused at the end)
        residual = (p_last - q_next).clamp_min(0.0)  # norm(max(0, p - q))
        fully_accepted = last == n - 1
    else:
        index = torch.arange(1, n, device=device)
        earlier = (parents[1:, None] == parents[None, 1:]) & (index[None] < index[:, None])  # (n-1, n-1) earlier sibling
        before = earlier.to(p_x.dtype) @ p_x  # the earlier siblings' mass
        accept = u * (1.0 - before) < p_x  # u < p(x) / (1 - before)
        first = accept & ~(earlier & accept[None]).any(-1)  # the first accepted child of its parent
        last = _deepest(_on_accepted_path(tree, torch.cat([first.new_ones(1), first])), depths)
        p_last = target_probs.index_select(0, last)[0]  # (V,)
        tried = torch.zeros_like(p_last).index_add_(0, tokens[1:], (parents[1:] == last).to(p_last.dtype))
        residual = p_last.masked_fill(tried > 0, 0.0)  # every child of the last node was rejected
        fully_accepted = torch.zeros((), dtype=torch.bool, device=device)  # a leaf's residual is p itself
    total = residual.sum()
    dist = torch.where(fully_accepted | (total <= 0), p_last, residual / total.clamp_min(1e-30))
    return _result(tree, last, sample_rows(dist[None], generator))


def verify(tree: DraftTree, target_logits: torch.Tensor, sampling: Sampling, generator=None):
    if sampling.greedy:
        return verify_greedy(tree, target_logits)
    return verify_sampling(tree, warp(target_logits, sampling), generator)
