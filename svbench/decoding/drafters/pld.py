"""Prompt-lookup decoding (PLD): a training-free draft copied from the context (no draft network).

The draft is the continuation of an earlier occurrence of the last n tokens, n from ``max_ngram`` down to
``min_ngram`` (the first n that matches wins), searched in the prompt and everything generated so far,
as transformers' ``prompt_lookup_num_tokens`` does; a continuation that reaches the end of the text is
extended periodically (the text is repeating; svbench's choice, transformers stops there). ``match=latest`` (default) takes the most recent
occurrence; ``match=first`` the earliest one, which is transformers' choice. At most ``num_tokens``
tokens are drafted, fewer if the policy stops earlier or the continuation runs out; no match drafts
nothing (the round is one AR step).

Index: for each n a dict {n-gram: where its continuation starts}, updated with the tokens that arrived
since the last round, so a lookup is O(1) and a round costs O(new tokens x n-gram sizes), not a scan
of the context.

Policies: the candidate tokens come without a draft distribution, so ``fixed`` (gamma caps the lookup)
and ``heuristic`` (its current length caps it) apply; ``svip`` and ``confidence`` are refused at config
time (``draft_distribution = False``). The policy is still asked after every token (probability 1,
entropy 0). Under sampling the draft is deterministic: verified with the deterministic-candidates rule,
exact.
"""
from __future__ import annotations

from svbench.decoding.tree import DraftTree
from svbench.errors import SvbenchError

MATCHES = ("latest", "first")


class PromptLookupDrafter:
    network = None
    draft_distribution = False

    def __init__(self, max_ngram: int = 3, min_ngram: int = 1, num_tokens: int = 10, match: str = "latest"):
        for name, value in (("max_ngram", max_ngram), ("min_ngram", min_ngram), ("num_tokens", num_tokens)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SvbenchError(f"method.drafter.{name}={value!r} must be an integer >= 1")
        if min_ngram > max_ngram:
            raise SvbenchError(f"method.drafter.min_ngram={min_ngram} must be <= max_ngram={max_ngram}")
        if match not in MATCHES:
            raise SvbenchError(f"method.drafter.match={match!r} must be one of {MATCHES}")
        self.sizes = list(range(max_ngram, min_ngram - 1, -1))  # longest n-gram first
        self.num_tokens, self.keep_first = num_tokens, match == "first"
        self.reset()

    @staticmethod
    def load_network(spec, target):
        raise SvbenchError("method=pld has no network")  # never called: network is None

    @classmethod
    def from_pair(cls, pair, **params) -> "PromptLookupDrafter":
        return cls(**params)

    def reset(self, target=None) -> None:
        self.index: dict[int, dict[tuple, int]] = {n: {} for n in self.sizes}  # n -> {n-gram: continuation start}
        self.indexed = 0  # n-grams ending before this position are in the index

    def _extend_index(self, ids: list[int]) -> None:
        """Add every n-gram that ends at positions indexed .. len(ids) - 2 (the last token's own n-gram is
        the query: its continuation is not known yet)."""
        for end in range(self.indexed, len(ids) - 1):
            for n, table in self.index.items():
                if end + 1 >= n:
                    key = tuple(ids[end + 1 - n: end + 1])
                    if self.keep_first:
                        table.setdefault(key, end + 1)
                    else:
                        table[key] = end + 1
        self.indexed = max(self.indexed, len(ids) - 1)

    def lookup(self, ids: list[int], limit: int) -> list[int]:
        """Up to ``limit`` tokens that followed an earlier occurrence of ids' last n tokens (largest n first).
        A continuation that runs into the end of ids is a repeat with period len(ids) - start: it goes on
        periodically (in ``1 2 1 2 1 2`` the latest ``1 2`` is followed by ``1 2`` only, the draft by
        ``1 2 1 2 ...``)."""
        self._extend_index(ids)
        for n in self.sizes:
            start = self.index[n].get(tuple(ids[-n:])) if len(ids) >= n else None
            if start is not None:
                draft, period = ids[start: start + limit], len(ids) - start
                while len(draft) < limit:
                    draft.append(draft[len(draft) - period])  # x_{i} = x_{i - period}
                return draft
        return []

    def get_candidates(self, ids, policy, max_len, sampling, generator=None) -> DraftTree:
        candidates = self.lookup(ids, min(max_len, self.num_tokens)) if max_len > 0 else []
        drafted = []
        for token in candidates:
            drafted.append(token)
            if policy.should_stop(len(drafted), 1.0, 0.0):
                break
        return DraftTree.chain(ids[-1], drafted)

    def update_candidate_strategy(self, tree, accepted_path) -> None:
        pass  # the index grows from ids at the next round
