"""Review actions: what a reader (or a senior MD) does on a case, start to finish.

Each action locks the task, writes its rows (annotation.services.decisions), lets consensus
settle or unsettle the case's ground truth (annotation.services.consensus), and returns a
ReviewResult. A retry with the client's key returns what was stored, marked replayed.

The pairwise knockout of Stage I plays champion against challenger, one round at a time. The
challengers' order is the task's stored `candidate_order`. Which side (A = left, B = right)
each candidate of a round takes is drawn from the task token and the round number, so a reload
shows the same pair the same way round, and the champion does not always sit on one side.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from annotation.lookups import unique_or_none
from annotation.models import (
    Candidate,
    Decision,
    GroundTruth,
    Mask,
    PairwiseRound,
    ReviewTask,
    Stage,
)
from annotation.roles import SENIOR_MD, has_role
from annotation.services.audit import audit_record, decision_summary, truth_summary
from annotation.services.candidates import mask_create, mask_shown
from annotation.services.consensus import (
    adjudication_options,
    case_truth,
    consensus_settle,
    consensus_unsettle,
)
from annotation.services.consensus_masks import READERS, readers_consensus
from annotation.services.decisions import (
    check_key,
    check_stage_open,
    check_undecided,
    decision_revoke,
    decision_stored,
    decision_write,
    drawing_validate,
    lock_held_task,
    round_stored,
    round_write,
)
from annotation.services.review_errors import (
    CaseFinal,
    InvalidChoice,
    InvalidMask,
    MalformedRequest,
    NotYourTask,
    ReviewError,
    RoundAlreadyRecorded,
)
from cxrio import masks as maskio

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


@dataclass(frozen=True)
class ReviewResult:
    """What a review action did to a task."""

    task: ReviewTask
    decision: Decision | None = None  # the reader's decision, once the task is decided
    replayed: bool = False  # a retry with a stored key: nothing changed
    round: PairwiseRound | None = None  # the round a pairwise answer recorded
    knockout: Knockout | None = None  # where the knockout stands after it
    truth: GroundTruth | None = None  # the case's accepted mask, once settled

    @property
    def decided(self) -> bool:
        return self.decision is not None


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


def is_knockout(task: ReviewTask) -> bool:
    """A pairwise task with a pair to compare (a single candidate is picked, not played)."""
    return task.stage.mode == Stage.Mode.PAIRWISE and len(task.candidate_order) > 1


def _chosen(candidate_id: int) -> Candidate:
    """A chosen candidate with what accepting it reads, its mask and that mask's network:
    consensus_settle takes the new decision as it is."""
    return Candidate.objects.select_related("mask__model_version").get(pk=candidate_id)


def _decided(
    task: ReviewTask, decision: Decision, created: bool, *, ip: str | None, **extra
) -> ReviewResult:
    """The result of a decision row: settled by consensus (and audited) when it is new."""
    truth = None
    if created:
        settled = consensus_settle(stage=task.stage, radiograph=task.radiograph, known=decision)
        truth = settled if isinstance(settled, GroundTruth) else None
        adjudicated = task.kind == ReviewTask.Kind.ADJUDICATION
        audit_record(
            action="adjudication.record" if adjudicated else "decision.record",
            actor=decision.reader,
            ip=ip,
            target=decision,
            dataset=task.stage.dataset_id,
            new={
                **decision_summary(decision),
                "accepted": truth_summary(truth),
                "adjudication_opened": isinstance(settled, ReviewTask),
            },
        )
    return ReviewResult(task=task, decision=decision, replayed=not created, truth=truth, **extra)


def round_record(
    *,
    task: ReviewTask,
    reader: AbstractBaseUser,
    number: int,
    choice: str,
    idempotency_key: str,
    time_on_screen_ms: int = 0,
    client_ip: str | None = None,
) -> ReviewResult:
    """Record one pairwise round. The last round's winner becomes the reader's Decision.

    A retry with the same key returns what was stored; the same round sent again with another
    key (a second tab) raises RoundAlreadyRecorded and changes nothing."""
    check_key(idempotency_key)
    if choice not in CHOICES:
        raise MalformedRequest(f"choice must be one of {', '.join(CHOICES)}, not {choice!r}")
    if not is_knockout(task) or task.kind != ReviewTask.Kind.REVIEW:
        raise InvalidChoice("this case is not a pairwise comparison")
    with transaction.atomic():
        locked = lock_held_task(task_id=task.pk, reader=reader)
        replay = _round_replay(locked, reader, idempotency_key)
        if replay is not None:
            return replay
        rounds = list(locked.rounds.order_by("number"))
        state = knockout_state(task=locked, rounds=rounds)
        if 1 <= number <= len(rounds):
            raise RoundAlreadyRecorded(
                f"round {number} was already recorded (in another tab?)", round=rounds[number - 1]
            )
        check_undecided(task=locked, reader=reader)
        check_stage_open(locked.stage)
        if state.number is None:
            raise InvalidChoice(
                "no pair is waiting in this case: "
                + ("draw the mask" if state.neither else "the knockout is over")
            )
        if number != state.number:
            raise InvalidChoice(f"round {number} is not the current round ({state.number})")
        winner_id = {"A": state.left, "B": state.right}.get(choice)
        row = round_write(
            task=locked,
            number=number,
            left_id=state.left,
            right_id=state.right,
            winner_id=winner_id,
            idempotency_key=idempotency_key,
            time_on_screen_ms=time_on_screen_ms,
        )
        if row is None:  # a concurrent retry with this key got in first
            return _round_replay(locked, reader, idempotency_key)
        audit_record(
            action="round.record",
            actor=reader,
            ip=client_ip,
            target=row,
            dataset=locked.stage.dataset_id,
            new={
                "task": locked.pk,
                "round": number,
                "left": state.left,
                "right": state.right,
                "choice": choice,
                "winner": winner_id,
            },
        )
        rounds.append(row)
        new_state = knockout_state(task=locked, rounds=rounds)
        if not new_state.finished:
            return ReviewResult(task=locked, round=row, knockout=new_state)
        decision, created = decision_write(
            task=locked,
            reader=reader,
            idempotency_key=idempotency_key,
            outcome=Decision.Outcome.CHOSE,
            candidate=_chosen(winner_id),
            position=1 if choice == "A" else 2,
            time_on_screen_ms=sum(r.time_on_screen_ms for r in rounds),
        )
        return _decided(locked, decision, created, ip=client_ip, round=row, knockout=new_state)


def round_undo(
    *,
    task: ReviewTask,
    reader: AbstractBaseUser,
    number: int,
    client_ip: str | None = None,
) -> ReviewResult:
    """Take back round `number` of a case still being decided, which must be its last round
    played: the reader sees that round's pair again (after "neither": the pair, not the
    drawing). Only this case changes; a decision on another case is decision_undo's.

    A retry finds the round gone already and returns the case as it stands, marked replayed;
    a round that is no longer the last one (another tab played on) is refused."""
    if not isinstance(number, int) or number < 1:
        raise MalformedRequest(f"round must be a whole number from 1, not {number!r}")
    if not is_knockout(task) or task.kind != ReviewTask.Kind.REVIEW:
        raise InvalidChoice("this case is not a pairwise comparison")
    with transaction.atomic():
        locked = lock_held_task(task_id=task.pk, reader=reader)
        check_undecided(task=locked, reader=reader)
        check_stage_open(locked.stage)
        rounds = list(locked.rounds.order_by("number"))
        if number > len(rounds):
            return ReviewResult(task=locked, replayed=True, knockout=knockout_state(task=locked))
        if number != len(rounds):
            raise InvalidChoice(
                f"round {number} is not the last round played ({len(rounds)}): "
                "undo takes back the last round only"
            )
        last = rounds.pop()
        audit_record(
            action="round.undo",
            actor=reader,
            ip=client_ip,
            target=last,
            dataset=locked.stage.dataset_id,
            old={
                "task": locked.pk,
                "round": last.number,
                "left": last.left_id,
                "right": last.right_id,
                "winner": last.winner_id,
            },
            new={"task": locked.pk, "round": last.number, "revoked": True},
        )
        last.delete()
        return ReviewResult(task=locked, knockout=knockout_state(task=locked, rounds=rounds))


def _round_replay(task: ReviewTask, reader: AbstractBaseUser, key: str) -> ReviewResult | None:
    stored = round_stored(task=task, key=key)
    if stored is None:
        return None
    decision = unique_or_none(
        Decision.objects.filter(task=task, reader=reader, idempotency_key=key)
    )
    return ReviewResult(
        task=task,
        decision=decision,
        replayed=True,
        round=stored,
        knockout=knockout_state(task=task),
        truth=case_truth(radiograph_id=task.radiograph_id),
    )


def _replay_or_lock(
    task: ReviewTask, reader: AbstractBaseUser, key: str
) -> tuple[ReviewTask, Decision | None]:
    check_key(key)
    locked = lock_held_task(task_id=task.pk, reader=reader)
    return locked, decision_stored(task=locked, reader=reader, key=key)


def _replayed(task: ReviewTask, decision: Decision) -> ReviewResult:
    truth = case_truth(radiograph_id=task.radiograph_id)
    return ReviewResult(task=task, decision=decision, replayed=True, truth=truth)


def _check_position(position: int, panes: int) -> None:
    if not isinstance(position, int) or not 1 <= position <= panes:
        raise InvalidChoice(f"position must be 1 to {panes}, not {position!r}")


def decision_record(
    *,
    task: ReviewTask,
    reader: AbstractBaseUser,
    position: int,
    idempotency_key: str,
    time_on_screen_ms: int = 0,
    client_ip: str | None = None,
) -> ReviewResult:
    """The reader picks the candidate shown at `position` (1-based) of an N-way screen."""
    with transaction.atomic():
        locked, stored = _replay_or_lock(task, reader, idempotency_key)
        if stored is not None:
            return _replayed(locked, stored)
        order = list(locked.candidate_order)
        if locked.kind != ReviewTask.Kind.REVIEW:
            raise InvalidChoice("adjudication is recorded with adjudication_record")
        if is_knockout(locked):
            raise InvalidChoice("a pairwise case is decided round by round")
        _check_position(position, len(order))
        candidate = _chosen(order[position - 1])
        decision, created = decision_write(
            key_checked=True,
            task=locked,
            reader=reader,
            idempotency_key=idempotency_key,
            outcome=Decision.Outcome.CHOSE,
            candidate=candidate,
            position=position,
            time_on_screen_ms=time_on_screen_ms,
        )
        return _decided(locked, decision, created, ip=client_ip)


def decision_record_drawing(
    *,
    task: ReviewTask,
    reader: AbstractBaseUser,
    png: bytes,
    idempotency_key: str,
    base: Candidate | None = None,
    no_infection: bool = False,
    time_on_screen_ms: int = 0,
    refinement: dict[str, Any] | None = None,
    client_ip: str | None = None,
) -> ReviewResult:
    """The reader rejected the candidates and drew a mask, blank or from `base` (refined).
    `refinement` (interactive.refinement_check) records the click-to-refine clicks behind it.

    An empty mask is accepted only with no_infection=True and never as a refinement: a COVID-19
    case without any marked region is a finding the reader must state, not an accident. A
    'refinement' that changed no pixel is recorded as choosing that candidate."""
    with transaction.atomic():
        locked, stored = _replay_or_lock(task, reader, idempotency_key)
        if stored is not None:
            return _replayed(locked, stored)
        if locked.kind != ReviewTask.Kind.REVIEW:
            raise InvalidChoice("adjudication picks one of the readers' masks")
        order = list(locked.candidate_order)
        if base is not None and base.pk not in order:
            raise InvalidChoice("the mask to refine is not one of this case's candidates")
        if base is not None and no_infection:
            raise InvalidMask("a refined candidate cannot be empty; start from a blank drawing")
        rounds = list(locked.rounds.order_by("number"))
        if is_knockout(locked) and (not rounds or rounds[-1].winner_id is not None):
            raise InvalidChoice("in a pairwise case you draw after finding neither acceptable")
        pixels = drawing_validate(task=locked, png=png, allow_empty=no_infection and base is None)
        round_ms = sum(r.time_on_screen_ms for r in rounds)
        fields = {
            "task": locked,
            "reader": reader,
            "idempotency_key": idempotency_key,
            "time_on_screen_ms": round_ms + time_on_screen_ms,
            **(refinement or {}),
        }
        if base is not None and maskio.pixel_sha256(pixels) == base.pixel_sha256:
            decision, created = decision_write(
                key_checked=True,
                outcome=Decision.Outcome.CHOSE,
                candidate=base,
                position=order.index(base.pk) + 1,
                **fields,
            )
            return _decided(locked, decision, created, ip=client_ip)
        # The key is checked before any file is written; a lost race leaves at most a blob
        # that the same pixels would have produced anyway (content-addressed).
        # Seniors adjudicate, and the accepted mask is, the drawing in the stage's outline style.
        mask = _own_mask(locked, reader, pixels, refined=base is not None)
        decision, created = decision_write(
            key_checked=True,
            outcome=Decision.Outcome.REFINED if base is not None else Decision.Outcome.DREW,
            candidate=base,
            mask=mask,
            position=order.index(base.pk) + 1 if base is not None else None,
            **fields,
        )
        return _decided(locked, decision, created, ip=client_ip)


def _own_mask(task: ReviewTask, reader: AbstractBaseUser, pixels, *, refined: bool) -> Mask:
    """A reader's (or senior's) drawing stored, and the form of it that is shown and accepted:
    in the stage's outline style."""
    mask = mask_create(
        radiograph=task.radiograph,
        pixels=pixels,
        kind=Mask.Kind.REFINED if refined else Mask.Kind.DRAWN,
        author=reader,
        stage=task.stage,
    )
    return mask_shown(stage=task.stage, mask=mask)


def adjudication_record(
    *,
    task: ReviewTask,
    reader: AbstractBaseUser,
    position: int,
    idempotency_key: str,
    time_on_screen_ms: int = 0,
    client_ip: str | None = None,
) -> ReviewResult:
    """A senior MD picks one of the readers' choices; it becomes the case's accepted mask."""
    with transaction.atomic():
        locked, stored = _replay_or_lock(task, reader, idempotency_key)
        if locked.kind != ReviewTask.Kind.ADJUDICATION:
            raise InvalidChoice("this case is not waiting for adjudication")
        if stored is not None:
            return _replayed(locked, stored)
        options = adjudication_options(task=locked)
        _check_position(position, len(options))
        picked, _count = options[position - 1]
        decision, created = decision_write(
            key_checked=True,
            task=locked,
            reader=reader,
            idempotency_key=idempotency_key,
            outcome=picked.outcome,
            candidate=picked.candidate,
            mask=picked.mask,
            position=position,
            time_on_screen_ms=time_on_screen_ms,
        )
        return _decided(locked, decision, created, ip=client_ip)


def adjudication_record_drawing(
    *,
    task: ReviewTask,
    reader: AbstractBaseUser,
    png: bytes,
    idempotency_key: str,
    base_position: int | None = None,
    from_consensus: bool = False,
    no_infection: bool = False,
    time_on_screen_ms: int = 0,
    refinement: dict[str, Any] | None = None,
    client_ip: str | None = None,
) -> ReviewResult:
    """A senior MD rejects the readers' masks and draws one, blank, starting from the option at
    `base_position` (refined), or from the STAPLE consensus of the readers' masks; it becomes
    the case's accepted mask. A refinement that changed no pixel is recorded as picking that
    option; the consensus accepted unchanged is stored as the readers' STAPLE mask."""
    if not has_role(reader, SENIOR_MD):
        raise NotYourTask("adjudication is for senior MDs")
    with transaction.atomic():
        locked, stored = _replay_or_lock(task, reader, idempotency_key)
        if locked.kind != ReviewTask.Kind.ADJUDICATION:
            raise InvalidChoice("this case is not waiting for adjudication")
        if stored is not None:
            return _replayed(locked, stored)
        options = adjudication_options(task=locked)
        base = None
        if from_consensus and (base_position is not None or len(options) < 2):
            raise InvalidChoice("the consensus is a start of its own, of two or more masks")
        if base_position is not None:
            _check_position(base_position, len(options))
            base, _count = options[base_position - 1]
            if no_infection:
                raise InvalidMask("a refined mask cannot be empty; start from a blank drawing")
        pixels = drawing_validate(task=locked, png=png, allow_empty=no_infection and base is None)
        fields = {
            "task": locked,
            "reader": reader,
            "idempotency_key": idempotency_key,
            "time_on_screen_ms": time_on_screen_ms,
            "position": base_position,
            **(refinement or {}),
        }
        if base is not None and maskio.pixel_sha256(pixels) == base.mask.pixel_sha256:
            decision, created = decision_write(
                key_checked=True,
                outcome=base.outcome,
                candidate=base.candidate,
                mask=base.mask,
                **fields,
            )
            return _decided(locked, decision, created, ip=client_ip)
        sources = [d.mask for d, _count in options]
        if from_consensus and np.array_equal(pixels, readers_consensus(sources)):
            mask = mask_create(
                radiograph=locked.radiograph,
                pixels=pixels,
                kind=Mask.Kind.STAPLE,
                stage=locked.stage,
                details={"of": READERS, "sources": [m.pk for m in sources]},
            )
            # Accepted in the stage's outline style, as every mask readers compared.
            mask = mask_shown(stage=locked.stage, mask=mask)
        else:
            mask = _own_mask(locked, reader, pixels, refined=base is not None)
        # Refining a reader's chosen candidate keeps that candidate as the base; a reader's own
        # drawing has none, so a mask refined from it is recorded as drawn.
        refined = base is not None and base.candidate_id is not None
        decision, created = decision_write(
            key_checked=True,
            outcome=Decision.Outcome.REFINED if refined else Decision.Outcome.DREW,
            candidate=base.candidate if refined else None,
            mask=mask,
            **fields,
        )
        return _decided(locked, decision, created, ip=client_ip)


def pick_record(
    *,
    task: ReviewTask,
    reader: AbstractBaseUser,
    position: int,
    idempotency_key: str,
    time_on_screen_ms: int = 0,
    client_ip: str | None = None,
) -> ReviewResult:
    """The reader picks the option shown at `position`: a candidate of a review task, or (senior
    MDs only) one of the readers' choices of an adjudication task."""
    fields = {
        "task": task,
        "reader": reader,
        "position": position,
        "idempotency_key": idempotency_key,
        "time_on_screen_ms": time_on_screen_ms,
        "client_ip": client_ip,
    }
    if task.kind != ReviewTask.Kind.ADJUDICATION:
        return decision_record(**fields)
    if not has_role(reader, SENIOR_MD):
        raise NotYourTask("adjudication is for senior MDs")
    return adjudication_record(**fields)


def decision_undo(
    *,
    stage: Stage,
    reader: AbstractBaseUser,
    idempotency_key: str | None = None,
    client_ip: str | None = None,
) -> ReviewResult:
    """Revoke the reader's most recent decision in the stage and give the case back to them,
    as long as the case is not final (stage closed, or adjudicated).

    With `idempotency_key` (the key that decision was made with) only that decision is taken
    back: a retry finds it revoked already and returns its case again instead of undoing the
    decision before it, and a decision that is no longer the last one is refused."""
    with transaction.atomic():
        named = None
        if idempotency_key is not None:
            check_key(idempotency_key)
            named = Decision.objects.filter(
                idempotency_key=idempotency_key,
                reader=reader,
                task__stage=stage,
                task__kind=ReviewTask.Kind.REVIEW,
            ).first()
            if named is None:
                raise ReviewError("no decision of yours in this stage was made with this key")
            if named.revoked_at is not None:
                task = lock_held_task(task_id=named.task_id, reader=reader)
                return ReviewResult(task=task, replayed=True)
        last = (
            Decision.objects.filter(
                reader=reader,
                task__stage=stage,
                task__kind=ReviewTask.Kind.REVIEW,
                revoked_at__isnull=True,
            )
            .order_by("-created_at", "-id")
            .first()
        )
        if last is None:
            raise ReviewError("there is no decision of yours to undo in this stage")
        if named is not None and named.pk != last.pk:
            raise ReviewError("only your last decision in this stage can be undone")
        task = lock_held_task(task_id=last.task_id, reader=reader)
        return _take_back(last, task, action="decision.undo", client_ip=client_ip)


def _take_back(
    decision: Decision, task: ReviewTask, *, action: str, client_ip: str | None
) -> ReviewResult:
    """Withdraw the case's accepted mask (refused once final), revoke the decision and lease
    the case to its reader again, audited. The caller holds the task lock."""
    truth = case_truth(radiograph_id=task.radiograph_id)
    rounds = [r.winner_id for r in task.rounds.order_by("number")]
    consensus_unsettle(stage=task.stage, radiograph=task.radiograph)
    task = decision_revoke(decision=decision, task=task)
    audit_record(
        action=action,
        actor=decision.reader,
        ip=client_ip,
        target=decision,
        dataset=task.stage.dataset_id,
        old={
            **decision_summary(decision),
            "revoked": False,
            "round_winners": rounds,
            "accepted": truth_summary(truth),
        },
        new={
            "revoked": True,
            "round_winners": [r.winner_id for r in task.rounds.order_by("number")],
            "accepted": None,
        },
    )
    return ReviewResult(task=task)


def decision_reopen(
    *, decision: Decision, reader: AbstractBaseUser, client_ip: str | None = None
) -> ReviewResult:
    """Revoke one of the reader's earlier decisions (not only the last) and give its case back
    to them, as it was shown, while the case is not final: the stage is open, no senior MD has
    adjudicated it, and its accepted mask (if any) is this stage's, withdrawn until the case is
    decided again. An adjudication that the readers' disagreement opened is withdrawn too.

    A retry finds the decision revoked and its case leased to the reader: it returns the case
    again, marked replayed, and changes nothing."""
    with transaction.atomic():
        task = lock_held_task(task_id=decision.task_id, reader=reader)
        current = Decision.objects.get(pk=decision.pk)
        if current.reader_id != reader.pk or task.kind != ReviewTask.Kind.REVIEW:
            raise NotYourTask("this decision is not one of yours to reopen")
        if current.revoked_at is not None:
            if (
                task.status == ReviewTask.Status.LEASED
                and not task.decisions.filter(reader=reader, revoked_at__isnull=True).exists()
            ):
                return ReviewResult(task=task, replayed=True)
            raise ReviewError("this decision was already taken back")
        if task.stage.status != Stage.Status.REVIEWING:
            raise CaseFinal(
                f"stage {task.stage.number} is {task.stage.get_status_display().lower()}: "
                "its decisions are final"
            )
        return _take_back(current, task, action="decision.reopen", client_ip=client_ip)
