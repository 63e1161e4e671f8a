"""Draft-length policies (ALGORITHMS.md §6). One interface for all:

    should_stop(drafted_len, token_prob, draft_entropy) -> bool   asked after every draft step
    update(drafted_len, accepted_len)                             told each round's outcome
    reset()                                                       a new sequence starts
    planned_steps(max_len) -> int | None                          the round's steps, if known before drafting

A policy that reads no draft distribution (fixed, heuristic) knows its round's length before drafting:
drafters then read the host once per round instead of once per step (planned_steps; the same rounds).

One unit everywhere: a draft *step* is a token for a chain and a level for a tree; drafted_len counts
steps and accepted_len the accepted depth, in should_stop and update alike.

Whether a round drafts at all is ArFallback's decision (off by default), attached as ``policy.ar_fallback``.

``max_len`` is the policy's hard cap per round; the engine also caps a round at the remaining budget.
Policies know nothing of drafters. Parameters are checked at construction: a bad value raises
SvbenchError naming the key.
"""
from __future__ import annotations

import math

from svbench.errors import SvbenchError

HARD_CAP = 40  # SVIP's hard cap per round; the heuristic schedule's cap too


def _check_int(name: str, value, low: int, high: int, prefix: str = "policy") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SvbenchError(f"{prefix}.{name}={value!r} must be an integer in [{low}, {high}]")
    return value


def _check_float(name: str, value, low: float, high: float, low_open=False, prefix: str = "policy") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise SvbenchError(f"{prefix}.{name}={value!r} must be a number")
    if value > high or value < low or (low_open and value == low):
        raise SvbenchError(f"{prefix}.{name}={value!r} must be in {'(' if low_open else '['}{low}, {high}]")
    return float(value)


class LengthPolicy:
    name = "base"
    max_len = HARD_CAP
    needs_draft_distribution = False  # True: reads token_prob / draft_entropy, so the drafter must provide them
    ar_fallback: "ArFallback | None" = None  # set by svbench.config.build_policy when ar_fallback.enabled

    def reset(self) -> None:
        pass

    def should_stop(self, drafted_len: int, token_prob: float, draft_entropy: float) -> bool:
        raise NotImplementedError

    def update(self, drafted_len: int, accepted_len: int) -> None:
        pass

    def planned_steps(self, max_len: int) -> int | None:
        """The draft steps this round will take when that is known before drafting: the first n <= max_len
        at which should_stop(n, ...) holds, for a policy that reads no draft distribution; None when the
        policy decides from each step's q (the drafter then reads the host after every step)."""
        if self.needs_draft_distribution:
            return None
        return next((n for n in range(1, max_len) if self.should_stop(n, math.nan, math.nan)), max_len)


class FixedPolicy(LengthPolicy):
    """The papers' "Const": draft exactly gamma tokens."""
    name = "fixed"

    def __init__(self, gamma: int = 5):
        self.gamma = self.max_len = _check_int("gamma", gamma, 1, 256)

    def should_stop(self, drafted_len, token_prob, draft_entropy):
        return drafted_len >= self.gamma


class HeuristicPolicy(LengthPolicy):
    """transformers' schedule: start at `initial`; +increase after a fully accepted round, else -decrease."""
    name = "heuristic"

    def __init__(self, initial: int = 5, increase: int = 2, decrease: int = 1, min_len: int = 1,
                 max_len: int = HARD_CAP):
        self.min_len = _check_int("min_len", min_len, 1, 256)
        self.max_len = _check_int("max_len", max_len, self.min_len, 256)
        self.initial = _check_int("initial", initial, self.min_len, self.max_len)
        self.increase = _check_int("increase", increase, 0, 256)
        self.decrease = _check_int("decrease", decrease, 0, 256)
        self.current = self.initial

    def reset(self):
        self.current = self.initial

    def should_stop(self, drafted_len, token_prob, draft_entropy):
        return drafted_len >= self.current

    def update(self, drafted_len, accepted_len):
        if drafted_len == 0:
            return
        if accepted_len == drafted_len:
            self.current = min(self.current + self.increase, self.max_len)
        else:
            self.current = max(self.current - self.decrease, self.min_len)


class ConfidencePolicy(LengthPolicy):
    """transformers' assistant_confidence_threshold: stop once the drafted token's draft probability
    (softmax of the raw draft logits) falls below `threshold`. The low-confidence token is still verified."""
    name = "confidence"
    needs_draft_distribution = True

    def __init__(self, threshold: float = 0.4, max_len: int = HARD_CAP):
        self.threshold = _check_float("threshold", threshold, 0.0, 1.0)
        self.max_len = _check_int("max_len", max_len, 1, 256)

    def should_stop(self, drafted_len, token_prob, draft_entropy):
        return token_prob < self.threshold


class SVIPPolicy(LengthPolicy):
    """SVIP: stop when sqrt(c * H_t) > h, H_t the draft entropy (nats, T=1) of the token just drafted,
    i.e. when the acceptance lower bound 1 - sqrt(c * H_t) drops below 1 - h. c=0.15, h=0.3 (official):
    stops when H_t > 0.6 nats. The check runs after the token is appended; no minimum length."""
    name = "svip"
    needs_draft_distribution = True

    def __init__(self, c: float = 0.15, h: float = 0.3, max_len: int = HARD_CAP):
        self.c = _check_float("c", c, 0.0, 1e6, low_open=True)
        self.h = _check_float("h", h, 0.0, 1.0, low_open=True)
        self.max_len = _check_int("max_len", max_len, 1, 256)

    def should_stop(self, drafted_len, token_prob, draft_entropy):
        return math.sqrt(self.c * max(draft_entropy, 0.0)) > self.h


class ArFallback:
    """Draft only while drafting pays: svbench's addition, in no paper, off by default (``ar_fallback``).

    SVIP and the others choose how far to draft, never whether to: every round drafts at least one step.
    Where the draft is almost never accepted (free-running T=1 text past ~2K tokens on SmolLM2: 0.04
    accepted per round) each round then pays a draft step and a wider verify for nothing, and SD ends
    slower than AR. This switch compares measured costs after every round (host floats, no device sync):

        drafting pays  <=>  ema(round seconds) / ema(tokens emitted)  <  t_ar

    with EMAs over drafting rounds only (weight ``alpha`` for the latest), and t_ar the EMA of measured
    target-only rounds' seconds or, before one was measured, the drafting round's verify seconds (a verify
    forward costs about one target step). No decision before 1/alpha drafting rounds (the EMAs' memory: one
    rejected first round must not switch drafting off). When drafting does not pay, the next ``pause`` rounds are
    target-only (draft length 0: drafters catch up on the skipped tokens at their next drafting round),
    then one round drafts again and updates the EMAs: if drafting still does not pay, the pause doubles
    (up to ``max_pause``), else drafting goes on and the pause is reset. Decisions use past rounds only, so
    greedy output is unchanged and sampled output keeps the target's law; but they depend on timings, so
    the rounds (and, under sampling, the ids) differ between runs.
    """

    def __init__(self, alpha: float = 0.1, pause: int = 8, max_pause: int = 128):
        self.alpha = _check_float("alpha", alpha, 0.0, 1.0, low_open=True, prefix="ar_fallback")
        self.first_pause = _check_int("pause", pause, 1, 1 << 20, prefix="ar_fallback")
        self.max_pause = _check_int("max_pause", max_pause, self.first_pause, 1 << 20, prefix="ar_fallback")
        self.reset()

    def reset(self) -> None:
        self.round_s = self.tokens = self.ar_s = None  # EMAs: drafting round seconds, tokens; target-only seconds
        self.pause, self.skip, self.probing = self.first_pause, 0, False
        self.drafting_rounds = 0

    def _ema(self, old, new):
        return new if old is None else old + self.alpha * (new - old)

    def draft_now(self) -> bool:
        """Whether the next round drafts (asked once per round, before drafting)."""
        if self.skip:
            self.skip -= 1
            return False
        return True

    def update(self, drafted: bool, tokens: int, round_s: float, verify_s: float) -> None:
        """A round's outcome: whether it drafted, tokens it emitted, its seconds and its verify seconds."""
        if not drafted:
            self.ar_s = self._ema(self.ar_s, round_s)
            return
        t_ar = self.ar_s if self.ar_s is not None else verify_s
        self.round_s, self.tokens = self._ema(self.round_s, round_s), self._ema(self.tokens, tokens)
        self.drafting_rounds += 1
        pays = self.round_s / self.tokens < t_ar or self.drafting_rounds * self.alpha < 1
        if pays:
            self.pause = self.first_pause
        elif self.probing:  # the round after a pause did not pay either
            self.pause = min(2 * self.pause, self.max_pause)
        self.skip, self.probing = (0, False) if pays else (self.pause, True)
