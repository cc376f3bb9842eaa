"""A judgement of an answer: passed or not, a message naming the fault, what was measured."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "Verdict",
    "fault",
    "ok",
]


@dataclass(frozen=True)
class Verdict:
    """One judgement: passed or not, a message naming the fault, and what was measured."""

    passed: bool
    message: str = ""
    measured: dict[str, float] = field(default_factory=dict)


def ok(note: str = "", **measured: float) -> Verdict:
    return Verdict(True, note, dict(measured))


def fault(message: str, **measured: float) -> Verdict:
    return Verdict(False, message, dict(measured))
