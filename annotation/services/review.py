"""The pairwise knockout of Stage I: champion against challenger, one round at a time.

The challengers' order is the task's stored `candidate_order`. Which side (A = left, B = right)
each candidate of a round takes is drawn from the task token and the round number, so a reload
shows the same pair the same way round, and the champion does not always sit on one side.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction

from annotation.models import Candidate, Decision, PairwiseRound, ReviewTask, Stage
from annotation.services.decisions import (
    check_key,
    check_stage_open,
    decision_write,
    lock_held_task,
)
from annotation.services.review_errors import (
    IdempotencyKeyReused,
    InvalidChoice,
    RoundAlreadyRecorded,
    TaskAlreadyDecided,
)

CHOICES = ("A", "B", "neither")


@dataclass(frozen=True)
class Knockout:
    """Where a task's knockout stands."""

    order: tuple[int, ...]
    rounds_done: int
    champion: int | None  # winner of the last round
    neither: bool  # the reader found neither candidate of the last round acceptable
    number: int | None = None  # the round to play now, if any
    left: int | None = None  # candidate ids shown as A and B
    right: int | None = None

    @property
    def total_rounds(self) -> int:
        return max(len(self.order) - 1, 0)

    @property
    def finished(self) -> bool:
        return not self.neither and self.number is None


def _swap(task_token: str, number: int) -> bool:
    return hashlib.sha256(f"{task_token}:{number}".encode()).digest()[0] & 1 == 1


def knockout_state(*, task: ReviewTask, rounds: list[PairwiseRound] | None = None) -> Knockout:
    """The pair to show now, computed from the stored order and the rounds played."""
    if rounds is None:
        rounds = list(task.rounds.order_by("number"))
    order = tuple(task.candidate_order)
    champion = None
    for r in rounds:
        if r.winner_id is None:
            return Knockout(order, len(rounds), champion, neither=True)
        champion = r.winner_id
    done = len(rounds)
    if done >= len(order) - 1:
        return Knockout(order, done, champion if done else None, neither=False)
    number = done + 1
    first, second = (order[0], order[1]) if done == 0 else (champion, order[done + 1])
    if _swap(task.token, number):
        first, second = second, first
    return Knockout(order, done, champion, False, number=number, left=first, right=second)


@dataclass(frozen=True)
class RoundResult:
    round: PairwiseRound
    decision: Decision | None  # set when this round ended the knockout with a winner
    state: Knockout
    replayed: bool = False


def round_record(
    *,
    task: ReviewTask,
    reader: AbstractBaseUser,
    number: int,
    choice: str,
    idempotency_key: str,
    time_on_screen_ms: int = 0,
) -> RoundResult:
    """Record one pairwise round. The last round's winner becomes the reader's Decision.

    A retry with the same key returns what was stored; the same round sent again with another
    key (a second tab) raises RoundAlreadyRecorded and changes nothing."""
    check_key(idempotency_key)
    if choice not in CHOICES:
        raise InvalidChoice(f"choice must be one of {', '.join(CHOICES)}, not {choice!r}")
    if task.stage.mode != Stage.Mode.PAIRWISE or task.kind != ReviewTask.Kind.REVIEW:
        raise InvalidChoice("this case is not a pairwise comparison")
    time_on_screen_ms = max(0, min(int(time_on_screen_ms), 2**31 - 1))
    with transaction.atomic():
        locked = lock_held_task(task_id=task.pk, reader=reader)
        replay = _replay(locked, reader, idempotency_key)
        if replay is not None:
            return replay
        rounds = list(locked.rounds.order_by("number"))
        state = knockout_state(task=locked, rounds=rounds)
        if 1 <= number <= len(rounds):
            raise RoundAlreadyRecorded(
                f"round {number} was already recorded (in another tab?)", round=rounds[number - 1]
            )
        active = locked.decisions.filter(reader=reader, revoked_at__isnull=True).first()
        if active is not None:
            raise TaskAlreadyDecided("you already decided this case", decision=active)
        check_stage_open(locked.stage)
        if state.number is None:
            raise InvalidChoice(
                "no pair is waiting in this case: "
                + ("draw the mask" if state.neither else "the knockout is over")
            )
        if number != state.number:
            raise InvalidChoice(f"round {number} is not the current round ({state.number})")
        winner_id = {"A": state.left, "B": state.right}.get(choice)
        try:
            with transaction.atomic():
                row = PairwiseRound.objects.create(
                    task=locked,
                    number=number,
                    left_id=state.left,
                    right_id=state.right,
                    winner_id=winner_id,
                    idempotency_key=idempotency_key,
                    time_on_screen_ms=time_on_screen_ms,
                )
        except IntegrityError:
            replay = _replay(locked, reader, idempotency_key)
            if replay is not None:
                return replay
            raise
        rounds.append(row)
        new_state = knockout_state(task=locked, rounds=rounds)
        decision = None
        if new_state.finished:
            decision = decision_write(
                task=locked,
                reader=reader,
                idempotency_key=idempotency_key,
                outcome=Decision.Outcome.CHOSE,
                candidate=Candidate.objects.get(pk=winner_id),
                position=1 if choice == "A" else 2,
                time_on_screen_ms=sum(r.time_on_screen_ms for r in rounds),
            )
        return RoundResult(round=row, decision=decision, state=new_state)


def _replay(task: ReviewTask, reader: AbstractBaseUser, key: str) -> RoundResult | None:
    stored = PairwiseRound.objects.filter(idempotency_key=key).first()
    if stored is None:
        return None
    if stored.task_id != task.pk:
        raise IdempotencyKeyReused("this request key was already used for another case")
    decision = Decision.objects.filter(task=task, reader=reader, idempotency_key=key).first()
    return RoundResult(
        round=stored, decision=decision, state=knockout_state(task=task), replayed=True
    )
