"""Errors the review services raise. Views turn them into clear messages and status codes."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from annotation.models import Decision, PairwiseRound


class ReviewError(Exception):
    """A review action cannot be done in the state the task is in; nothing was changed."""

    status = 400


class NotYourTask(ReviewError):
    """The reader does not hold this task (never had it, or it was handed to someone else)."""

    status = 404


class NoTaskAvailable(ReviewError):
    status = 404


class InvalidChoice(ReviewError):
    status = 400


class InvalidMask(ReviewError):
    status = 400


class IdempotencyKeyReused(ReviewError):
    """A client key already names a different action: the client has a bug, not a retry."""

    status = 409


class TaskAlreadyDecided(ReviewError):
    """Another submission (second tab, double click with a new key) decided this task first."""

    status = 409

    def __init__(self, message: str, *, decision: Decision) -> None:
        super().__init__(message)
        self.decision = decision


class RoundAlreadyRecorded(ReviewError):
    status = 409

    def __init__(self, message: str, *, round: PairwiseRound) -> None:
        super().__init__(message)
        self.round = round


class CaseFinal(ReviewError):
    """The case's ground truth can no longer change (stage closed or adjudicated)."""

    status = 409


class ConsensusError(ReviewError):
    status = 409
