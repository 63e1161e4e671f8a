"""EAGLE-3 (svbench.nets.eagle3): the EAGLE-2 dynamic tree, drafted by a head that reads three of the
target's layers at the verified positions and its own outputs inside the tree.

Everything but the network is EagleDrafter's: the same level expansion, rerank, policy calls and cache
handling (one tree builder). What differs: the target runner hands over the concatenated hidden states
of the head's ``target_layers`` (set here at reset) instead of its final hidden state, and the head fuses
them with its FC at the catch-up step; a tree node's input is its parent's output, as in EagleDrafter.
"""
from __future__ import annotations

from svbench.decoding.drafters.eagle import EagleDrafter
from svbench.models import load_target_reader
from svbench.nets.eagle3 import eagle3_from_target, load_eagle3


def load_eagle3_network(spec, target):
    """The pair's ``eagle3`` entry: fresh (untrained, the whole vocabulary), or a folder (svbench's or the
    official release's format)."""
    return load_target_reader(spec, target, "eagle3", lambda t, s: eagle3_from_target(t), load_eagle3)


class Eagle3Drafter(EagleDrafter):
    network = "eagle3"
    load_network = staticmethod(load_eagle3_network)

    def reset(self, target=None) -> None:
        super().reset(target)
        if target is not None:
            target.feature_layers = list(self.head.target_layers)  # (k, 3d) features from the next prefill on
