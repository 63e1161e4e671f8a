"""Drafters propose a DraftTree each round. This is the registry: a method is ``conf/method/<name>.yaml``
whose ``drafter._target_`` names a class implementing ``Drafter``; svbench loads the class's network
from the pair entry it declares and builds it with ``from_pair(pair, **params)``. Nothing else in
svbench lists methods, so a new method is one drafter file + one conf file (+ one ``nets/`` file if it
brings a new network).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

    from svbench.decoding.policies import LengthPolicy
    from svbench.decoding.target import TargetRunner
    from svbench.decoding.tree import DraftTree
    from svbench.decoding.verify import Sampling
    from svbench.models import ModelPair


@runtime_checkable
class Drafter(Protocol):
    """The drafter interface (two methods per round, after transformers' candidate generators).

    Class attributes:
        network: the pair entry holding this drafter's network ("draft", "glide", "eagle", ...), or None
            for a drafter without one (one that copies from the context). ``load_network(spec, target)`` loads
            that entry.
        draft_distribution: True when each drafted step comes with a draft distribution (its entropy and
            probability reach the policy); policies that need one (svip, confidence) refuse a drafter
            without it.
    """

    network: ClassVar[str | None]
    draft_distribution: ClassVar[bool]

    @staticmethod
    def load_network(spec: dict, target: "torch.nn.Module") -> tuple["torch.nn.Module", list[int] | None]:
        """The network (float32, CPU) and its drafting vocabulary subset (token ids) or None."""

    @classmethod
    def from_pair(cls, pair: "ModelPair", **params) -> "Drafter":
        """Build from a loaded pair (``pair.network`` holds the network) and the method's parameters."""

    def reset(self, target: "TargetRunner") -> None:
        """A new sequence starts. ``target`` is the target runner: drafters that read the target's KV
        cache (GliDe) or features (EAGLE) keep it; others ignore it."""

    def get_candidates(self, ids: list[int], policy: "LengthPolicy", max_len: int, sampling: "Sampling",
                       generator=None) -> "DraftTree":
        """ids: every token so far (prompt + emitted), ids[-1] the root, not yet in the target's cache.
        Draft at most max_len steps (tokens for a chain, levels for a tree): ``policy.planned_steps(max_len)``
        when the policy knows the length up front (fixed, heuristic: no host read until the round's end),
        otherwise asking ``policy.should_stop(steps, token_prob, draft_entropy)`` after each step. Returns the tree: tokens (n,),
        parents (n,), depths (n,), draft_probs (n, V) for a sampled chain, draft_entropy (steps,), steps;
        optionally device_arrays (3, n): tokens / parents / depths already on the device (saves the upload
        the target forward would otherwise make)."""

    def update_candidate_strategy(self, tree: "DraftTree", accepted_path: list[int]) -> None:
        """Told which nodes (indices into tree.tokens, root excluded, in order) the target accepted."""


def drafter_class(method_cfg: dict):
    """The Drafter class a method config names (``drafter._target_``), or None for the AR baseline."""
    from svbench.config import locate  # here: svbench.config imports this module
    from svbench.errors import SvbenchError

    spec = method_cfg.get("drafter")
    if not spec:
        return None
    path = spec.get("_target_")
    cls = locate(path, "method.drafter._target_")
    missing = [a for a in ("network", "draft_distribution", "from_pair", "get_candidates",
                           "update_candidate_strategy", "reset") if not hasattr(cls, a)]
    if getattr(cls, "network", None) is not None and not hasattr(cls, "load_network"):
        missing.append("load_network")
    if missing:
        raise SvbenchError(f"method.drafter._target_={path!r} is not a Drafter: it lacks {missing}")
    return cls
