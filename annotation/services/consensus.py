"""From readers' decisions to a case's ground truth.

One reader: their choice is accepted. Several: a strict majority on the same candidate is
accepted; otherwise a senior MD adjudicates between the readers' choices (shown blinded, by
position, with how many readers picked each) and their pick is accepted. Drawn and refined
masks are each their own option: two readers never "agree" on two different drawings.
"""

from __future__ import annotations

import random
from collections import Counter

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from annotation.models import (
    Decision,
    GroundTruth,
    Mask,
    ModelVersion,
    Radiograph,
    ReviewTask,
    Stage,
)
from annotation.roles import SENIOR_MD, has_role
from annotation.services.decisions import (
    check_key,
    decision_record,
    decision_write,
    lock_held_task,
)
from annotation.services.review_errors import ConsensusError, InvalidChoice, NotYourTask

_rng = random.SystemRandom()


def option_key(decision: Decision) -> tuple[str, int]:
    """What counts as 'the same choice': the same candidate, or (for drawings) the same mask."""
    if decision.outcome == Decision.Outcome.CHOSE:
        return ("candidate", decision.candidate_id)
    return ("mask", decision.mask_id)


def case_decisions(*, stage: Stage, radiograph: Radiograph) -> list[Decision]:
    return list(
        Decision.objects.filter(
            task__stage=stage,
            task__radiograph=radiograph,
            task__kind=ReviewTask.Kind.REVIEW,
            revoked_at__isnull=True,
        )
        .select_related("candidate", "mask", "reader")
        .order_by("created_at", "id")
    )


def consensus_settle(*, stage: Stage, radiograph: Radiograph) -> GroundTruth | ReviewTask | None:
    """Accept the case's mask, or open its adjudication, once every reader has decided.

    Returns the GroundTruth, the adjudication task, or None while readers are still missing."""
    decisions = case_decisions(stage=stage, radiograph=radiograph)
    if len(decisions) < stage.readers_per_case:
        return None
    votes = Counter(option_key(d) for d in decisions)
    (top, count), *_ = votes.most_common(1)
    if count * 2 > len(decisions):
        winner = next(d for d in decisions if option_key(d) == top)
        method = GroundTruth.Method.SINGLE if len(decisions) == 1 else GroundTruth.Method.MAJORITY
        return ground_truth_accept(
            stage=stage,
            decision=winner,
            readers=[d.reader for d in decisions],
            method=method,
            agreement=count / len(decisions),
        )
    # One representative decision per distinct option, in an order drawn for this task.
    options = []
    for key in votes:
        options.append(next(d.pk for d in decisions if option_key(d) == key))
    task, created = ReviewTask.objects.get_or_create(
        stage=stage,
        radiograph=radiograph,
        kind=ReviewTask.Kind.ADJUDICATION,
        slot=0,
        defaults={"candidate_order": _rng.sample(options, len(options))},
    )
    if not created:
        if task.status == ReviewTask.Status.DONE:
            raise ConsensusError("this case was already adjudicated")
        # Reopened after an undo: fresh options, fresh token, back in the pool.
        from annotation.models import _opaque_token

        task.candidate_order = _rng.sample(options, len(options))
        task.status = ReviewTask.Status.OPEN
        task.reader = None
        task.lease_expires_at = None
        task.token = _opaque_token()
        task.save()
    return task


def _source_of(decision: Decision) -> tuple[str, list[ModelVersion]]:
    if decision.outcome == Decision.Outcome.DREW:
        return GroundTruth.Source.DRAWN, []
    candidate = decision.candidate
    masks = {candidate.mask, *candidate.sources.select_related("model_version")}
    versions = sorted({m.model_version for m in masks if m.model_version_id}, key=lambda v: v.pk)
    if decision.outcome == Decision.Outcome.REFINED:
        return GroundTruth.Source.REFINED, versions
    kinds = {m.kind for m in masks}
    # A candidate that equals the manual mask is credited to the manual mask; the networks
    # that produced the same pixels are still listed in model_versions.
    for kind, source in (
        (Mask.Kind.MANUAL, GroundTruth.Source.MANUAL),
        (Mask.Kind.NETWORK, GroundTruth.Source.NETWORK),
        (Mask.Kind.REFINED, GroundTruth.Source.REFINED),
    ):
        if kind in kinds:
            return source, versions
    return GroundTruth.Source.DRAWN, versions


def ground_truth_accept(
    *,
    stage: Stage,
    decision: Decision,
    readers: list[AbstractBaseUser],
    method: str,
    agreement: float,
) -> GroundTruth:
    """Write (or, within the same stage, replace) the case's accepted mask with provenance."""
    radiograph = decision.task.radiograph
    existing = GroundTruth.objects.filter(radiograph=radiograph).first()
    if existing is not None and existing.stage_id != stage.pk:
        raise ConsensusError(
            f"case {radiograph.pk} already has an accepted mask from another stage or import"
        )
    if existing is not None:
        existing.delete()
    source, versions = _source_of(decision)
    truth = GroundTruth.objects.create(
        radiograph=radiograph,
        mask=decision.mask,
        stage=stage,
        source=source,
        method=method,
        agreement=agreement,
    )
    truth.model_versions.set(versions)
    truth.readers.set(readers)
    # The last accepted case closes the stage, and the next one can be launched.
    transaction.on_commit(lambda: _close_if_done(stage))
    return truth


def _close_if_done(stage: Stage) -> None:
    from annotation.services.stages import stage_maybe_close

    stage_maybe_close(stage=stage)


def adjudication_options(*, task: ReviewTask) -> list[tuple[Decision, int]]:
    """The readers' distinct choices, in the task's order, each with how many readers made it."""
    decisions = case_decisions(stage=task.stage, radiograph=task.radiograph)
    votes = Counter(option_key(d) for d in decisions)
    by_id = {d.pk: d for d in decisions}
    shown = []
    for decision_id in task.candidate_order:
        decision = by_id.get(decision_id)
        if decision is None:
            raise ConsensusError("a reader's decision changed; this adjudication is out of date")
        shown.append((decision, votes[option_key(decision)]))
    return shown


def adjudication_record(
    *,
    task: ReviewTask,
    reader: AbstractBaseUser,
    position: int,
    idempotency_key: str,
    time_on_screen_ms: int = 0,
) -> GroundTruth:
    """A senior MD picks one of the readers' choices; it becomes the case's accepted mask."""
    check_key(idempotency_key)
    with transaction.atomic():
        locked = lock_held_task(task_id=task.pk, reader=reader)
        if locked.kind != ReviewTask.Kind.ADJUDICATION:
            raise InvalidChoice("this case is not waiting for adjudication")
        stored = Decision.objects.filter(idempotency_key=idempotency_key, task=locked).first()
        if stored is not None:
            return GroundTruth.objects.get(radiograph=locked.radiograph)
        options = adjudication_options(task=locked)
        if not isinstance(position, int) or not 1 <= position <= len(options):
            raise InvalidChoice(f"position must be 1 to {len(options)}, not {position!r}")
        picked, count = options[position - 1]
        decision_write(
            task=locked,
            reader=reader,
            idempotency_key=idempotency_key,
            outcome=picked.outcome,
            candidate=picked.candidate,
            mask=picked.mask,
            position=position,
            time_on_screen_ms=time_on_screen_ms,
        )
        decisions = case_decisions(stage=locked.stage, radiograph=locked.radiograph)
        return ground_truth_accept(
            stage=locked.stage,
            decision=picked,
            readers=[d.reader for d in decisions] + [reader],
            method=GroundTruth.Method.ADJUDICATION,
            agreement=count / len(decisions),
        )


def pick_record(
    *,
    task: ReviewTask,
    reader: AbstractBaseUser,
    position: int,
    idempotency_key: str,
    time_on_screen_ms: int = 0,
) -> Decision:
    """The reader picks the option shown at `position`: a candidate of a review task, or (senior
    MDs only) one of the readers' choices of an adjudication task. Returns the Decision."""
    fields = {
        "task": task,
        "reader": reader,
        "position": position,
        "idempotency_key": idempotency_key,
        "time_on_screen_ms": time_on_screen_ms,
    }
    if task.kind != ReviewTask.Kind.ADJUDICATION:
        return decision_record(**fields)
    if not has_role(reader, SENIOR_MD):
        raise NotYourTask("adjudication is for senior MDs")
    adjudication_record(**fields)
    return Decision.objects.get(idempotency_key=idempotency_key)
