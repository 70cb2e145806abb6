"""Errors the review services raise, each with the one HTTP status it is answered with.

The status is the error's meaning, wherever it is answered (the review API, a form post):
400 the request is malformed (a bad key, an unusable drawing); 403 the account may not review
at all (it also sees provenance: annotation.roles.sees_provenance); 404 the case is not in the
reader's queue (never theirs, or handed to another reader: the two look the same, so nothing
leaks); 409 the request is well formed but does not fit the case as it stands (another round
is current, no such position, stage closed, already decided, final, nothing to undo).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from annotation.models import Decision, PairwiseRound


class ReviewError(Exception):
    """A review action cannot be done in the state the task is in; nothing was changed."""

    status = 409


class MalformedRequest(ReviewError):
    """The request itself is unusable (a missing or badly formed field)."""

    status = 400


class NotYourTask(ReviewError):
    """The reader does not hold this task (never had it, or it was handed to someone else)."""

    status = 404


class RoleConflict(ReviewError):
    """The reader's account also sees provenance (admin, researcher, superuser): not blinded."""

    status = 403


class InvalidChoice(ReviewError):
    """Well formed, but not a choice this case offers now (no such position, not the round)."""


class InvalidMask(MalformedRequest):
    """The drawing cannot be used (not a PNG, the wrong size, empty without saying so)."""


class IdempotencyKeyReused(ReviewError):
    """A client key already names a different action: the client has a bug, not a retry."""


class TaskAlreadyDecided(ReviewError):
    """Another submission (second tab, double click with a new key) decided this task first."""

    def __init__(self, message: str, *, decision: Decision) -> None:
        super().__init__(message)
        self.decision = decision


class RoundAlreadyRecorded(ReviewError):
    def __init__(self, message: str, *, round: PairwiseRound) -> None:
        super().__init__(message)
        self.round = round


class LeaseLost(ReviewError):
    """The reader's lease on a case they still see ran out; the case went back to the pool."""


class CaseFinal(ReviewError):
    """The case's ground truth can no longer change (stage closed or adjudicated)."""


class ConsensusError(ReviewError):
    pass
