"""The verdicts a claim check returns (``mmlib.claims``), and how each is worded in the claims table.

A check returns ``(ours, ok)``; ``ok`` is

- ``True`` / ``False``: holds / does not hold;
- :class:`Says`: decided, but worded by what the numbers say instead of a bare "does not hold"
  (e.g. "faster than claimed (18.0×, outside 1.8×–7.2×)");
- :class:`NotSeparable`: neither row is above the other on the test's interval;
- :class:`NotTestable`: a stated precondition failed (named), e.g. the stand-in too weak, or a row
  stopped by its step budget while its validation loss was still falling;
- :class:`NeedsSeeds`: the verdict's margin is smaller than a stated run-to-run spread, so one run
  cannot decide it (more seeds were not run within the budget);
- :class:`SeedsDisagree`: the test was run on several training seeds and some pass, some fail;
- ``None``: not run.
"""
from __future__ import annotations

from .eval.bootstrap import Interval

HOLDS, FAILS, NOT_RUN, NOT_TESTABLE = "holds", "does not hold", "not run", "not testable here"
NOT_SEPARABLE = "not separable (intervals overlap)"
NEEDS_SEEDS = "inside run-to-run spread: needs seeds (not run within the budget)"


class NotTestable:
    """A verdict for a claim whose stated precondition failed; ``why`` names the precondition."""

    def __init__(self, why: str):
        self.why = why

    def __repr__(self) -> str:
        return f"NotTestable({self.why!r})"


class NotSeparable:
    """Neither row's interval lies above the other's (or the paired difference's interval holds 0)."""


class Says:
    """A decided verdict worded by what the numbers say; ``holds`` whether the study's claim holds."""

    def __init__(self, text: str, holds: bool = False):
        self.text, self.holds = text, holds

    def __repr__(self) -> str:
        return f"Says({self.text!r})"


class NeedsSeeds:
    """The margin (``margin``) is below the stated run-to-run spread (``spread``, from ``source``)."""

    def __init__(self, would: str, margin: float, spread: float, source: str, unit: str = ""):
        self.would, self.margin, self.spread, self.source, self.unit = would, margin, spread, source, unit

    def __repr__(self) -> str:
        return f"NeedsSeeds({self.would!r}, {self.margin:.3g} < {self.spread:.3g})"


class SeedsDisagree:
    """Judged on ``n`` training seeds, ``wins`` of which pass the test: one run's verdict would be luck."""

    def __init__(self, wins: int, n: int):
        self.wins, self.n = wins, n

    def __repr__(self) -> str:
        return f"SeedsDisagree({self.wins}/{self.n})"


def decided(ok) -> bool:
    return isinstance(ok, (bool, Says))


def verdict(ok) -> str:
    if isinstance(ok, NotSeparable):
        return NOT_SEPARABLE
    if isinstance(ok, NotTestable):
        return f"{NOT_TESTABLE} ({ok.why})"
    if isinstance(ok, Says):
        return ok.text
    if isinstance(ok, SeedsDisagree):
        return f"not decided: training seeds disagree ({ok.wins} of {ok.n} pass)"
    if isinstance(ok, NeedsSeeds):
        u = f" {ok.unit}" if ok.unit else ""
        return f"{NEEDS_SEEDS}; this run: {ok.would} by {ok.margin:.3g}{u}, less than the spread {ok.spread:.3g}{u} ({ok.source})"
    return NOT_RUN if ok is None else HOLDS if ok else FAILS


def beats(a: Interval, b: Interval) -> bool | NotSeparable:
    """True: a's interval above b's; False: at or below it with no overlap; else NotSeparable."""
    if a.lo > b.hi:
        return True
    if a.hi < b.lo:
        return False
    return NotSeparable()


def beats_paired(diff: Interval) -> bool | NotSeparable:
    """The paired test: the interval of a − b (same resamples for both rows) above 0, below 0, or across it."""
    if diff.lo > 0:
        return True
    if diff.hi < 0:
        return False
    return NotSeparable()


def within_spread(ok, margin: float, spread: float | None, source: str, unit: str = "") -> object:
    """``ok`` unless a decided verdict's ``margin`` is smaller than a stated run-to-run ``spread``."""
    if spread is None or not decided(ok) or margin >= spread:
        return ok
    return NeedsSeeds(verdict(ok), margin, spread, source, unit)
