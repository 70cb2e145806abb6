"""From readers' decisions to a case's ground truth: settle it, and unsettle it on undo.

One reader: their choice is accepted. Several: a strict majority on the same candidate is
accepted; otherwise a senior MD adjudicates between the readers' choices (shown blinded, by
position, with how many readers picked each) and their pick is accepted. Drawn and refined
masks are each their own option: two readers never "agree" on two different drawings.

This layer reads decision rows and writes ground truths and adjudication tasks; it never calls
the review actions (annotation.services.review) that call it.
"""

from __future__ import annotations

import random
from collections import Counter

from django.db import transaction

from annotation.lookups import unique_or_none
from annotation.models import (
    Decision,
    GroundTruth,
    Mask,
    ModelVersion,
    Radiograph,
    ReviewTask,
    Stage,
    _opaque_token,
)
from annotation.services.candidates import candidate_source
from annotation.services.review_errors import CaseFinal, ConsensusError

_rng = random.SystemRandom()


def option_key(decision: Decision) -> tuple[str, int]:
    """What counts as 'the same choice': the same candidate, or (for drawings) the same mask."""
    if decision.outcome == Decision.Outcome.CHOSE:
        return ("candidate", decision.candidate_id)
    return ("mask", decision.mask_id)


def case_truth(*, radiograph_id: int) -> GroundTruth | None:
    """The case's accepted mask, if it has one (a case has at most one)."""
    return unique_or_none(GroundTruth.objects.filter(radiograph_id=radiograph_id))


# What accepting a decision reads: its task, and its candidate's mask and network (readers and
# the case are written by id: no need to read them).
ACCEPT_READS = ("candidate__mask__model_version", "mask", "task")


def case_decisions(*, stage: Stage, radiograph: Radiograph, related: bool = True) -> list[Decision]:
    """The readers' standing decisions on the case, oldest first; with `related`, each with
    what accepting it reads (ACCEPT_READS)."""
    decisions = Decision.objects.filter(
        task__stage=stage,
        task__radiograph=radiograph,
        task__kind=ReviewTask.Kind.REVIEW,
        revoked_at__isnull=True,
    )
    if related:
        decisions = decisions.select_related(*ACCEPT_READS)
    return list(decisions.order_by("created_at", "id"))


def _to_accept(decision: Decision, known: Decision | None) -> Decision:
    """The decision with what accepting it reads: `known` when it is that decision (the one
    just written, in hand), else read again with ACCEPT_READS."""
    if known is not None and known.pk == decision.pk:
        return known
    return Decision.objects.select_related(*ACCEPT_READS).get(pk=decision.pk)


def _adjudication(stage: Stage, radiograph: Radiograph) -> ReviewTask | None:
    return unique_or_none(
        ReviewTask.objects.filter(
            stage=stage, radiograph=radiograph, kind=ReviewTask.Kind.ADJUDICATION
        )
    )


def consensus_settle(
    *, stage: Stage, radiograph: Radiograph, known: Decision | None = None
) -> GroundTruth | ReviewTask | None:
    """Accept the case's mask, or open its adjudication, once every reader has decided; once
    a senior MD has adjudicated, accept their pick. `known` is a decision of the case in hand
    with its task, candidate and mask (the one just written): not read again.

    Returns the GroundTruth, the adjudication task, or None while readers are still missing."""
    # The decisions alone: only the one accepted needs its relations (_to_accept), and it is
    # most often the one just written.
    decisions = case_decisions(stage=stage, radiograph=radiograph, related=False)
    # An adjudication is opened only between two or more readers' differing choices (and a
    # settled one keeps them: their undo is refused), so a case with one decision has none.
    adjudication = _adjudication(stage, radiograph) if len(decisions) > 1 else None
    if adjudication is not None and adjudication.status == ReviewTask.Status.DONE:
        return _accept_adjudication(adjudication, decisions, known)
    if len(decisions) < stage.readers_per_case:
        return None
    votes = Counter(option_key(d) for d in decisions)
    (top, count), *_ = votes.most_common(1)
    if count * 2 > len(decisions):
        winner = next(d for d in decisions if option_key(d) == top)
        method = GroundTruth.Method.SINGLE if len(decisions) == 1 else GroundTruth.Method.MAJORITY
        return ground_truth_accept(
            stage=stage,
            decision=_to_accept(winner, known),
            readers=[d.reader_id for d in decisions],
            method=method,
            agreement=count / len(decisions),
        )
    # One representative decision per distinct option, in an order drawn for this task.
    options = [next(d.pk for d in decisions if option_key(d) == key) for key in votes]
    if adjudication is None:
        return ReviewTask.objects.create(
            stage=stage,
            radiograph=radiograph,
            kind=ReviewTask.Kind.ADJUDICATION,
            slot=0,
            candidate_order=_rng.sample(options, len(options)),
        )
    # Reopened after an undo: fresh options, fresh token, back in the pool.
    adjudication.candidate_order = _rng.sample(options, len(options))
    adjudication.status = ReviewTask.Status.OPEN
    adjudication.reader = None
    adjudication.lease_expires_at = None
    adjudication.token = _opaque_token()
    adjudication.save()
    return adjudication


def _accept_adjudication(
    task: ReviewTask, decisions: list[Decision], known: Decision | None
) -> GroundTruth:
    verdict = Decision.objects.select_related("task").get(task=task, revoked_at__isnull=True)
    by_id = {d.pk: d for d in decisions}
    picked = None
    if verdict.position is not None:
        picked = by_id.get(task.candidate_order[verdict.position - 1])
        if picked is None:
            raise ConsensusError("a reader's decision changed; this adjudication is out of date")
    if picked is None or picked.mask_id != verdict.mask_id:
        # The senior MD drew a mask, or refined one of the readers' (at `position`): theirs is
        # accepted, and no reader chose it.
        return ground_truth_accept(
            stage=task.stage,
            decision=verdict,
            readers=[d.reader_id for d in decisions] + [verdict.reader_id],
            method=GroundTruth.Method.ADJUDICATION,
            agreement=0.0,
        )
    count = sum(option_key(d) == option_key(picked) for d in decisions)
    return ground_truth_accept(
        stage=task.stage,
        decision=_to_accept(picked, known),
        readers=[d.reader_id for d in decisions] + [verdict.reader_id],
        method=GroundTruth.Method.ADJUDICATION,
        agreement=count / len(decisions),
    )


def consensus_unsettle(*, stage: Stage, radiograph: Radiograph) -> None:
    """Withdraw the case's accepted mask (and any adjudication still open) before a reader's
    decision is taken back; refused once the case is final."""
    if stage.status == Stage.Status.CLOSED:
        raise CaseFinal("the stage is closed; its decisions are final")
    adjudication = _adjudication(stage, radiograph)
    if adjudication is not None:
        if adjudication.status == ReviewTask.Status.DONE:
            raise CaseFinal("a senior MD has settled this case; it can no longer change")
        # Readers disagreed; with this decision gone there is nothing to adjudicate yet.
        ReviewTask.objects.filter(pk=adjudication.pk).update(
            status=ReviewTask.Status.CANCELLED, reader=None, lease_expires_at=None
        )
    truth = case_truth(radiograph_id=radiograph.pk)
    if truth is not None:
        if truth.stage_id != stage.pk:
            raise CaseFinal("this case's accepted mask comes from another stage")
        truth.delete()


def _source_of(decision: Decision) -> tuple[str, list[ModelVersion]]:
    """Where the accepted mask came from, and the networks behind it: a mask made with
    click-to-refine names the interactive model too."""
    source, versions = _origin_of(decision)
    if decision.interactive_model_id is not None:
        versions = [*versions, decision.interactive_model]
    return source, versions


def _origin_of(decision: Decision) -> tuple[str, list[ModelVersion]]:
    if decision.outcome == Decision.Outcome.DREW:
        if decision.mask.kind == Mask.Kind.STAPLE:  # a senior accepted the readers' consensus
            return GroundTruth.Source.STAPLE, []
        return GroundTruth.Source.DRAWN, []
    source, versions = candidate_source(decision.candidate)
    if decision.outcome == Decision.Outcome.REFINED:
        return GroundTruth.Source.REFINED, versions
    return source, versions


def ground_truth_accept(
    *,
    stage: Stage,
    decision: Decision,
    readers: list[int],
    method: str,
    agreement: float,
) -> GroundTruth:
    """Write (or, within the same stage, replace) the case's accepted mask with provenance;
    `readers` are the ids of the users who chose it."""
    radiograph_id = decision.task.radiograph_id
    existing = case_truth(radiograph_id=radiograph_id)
    if existing is not None and existing.stage_id != stage.pk:
        raise ConsensusError(
            f"case {radiograph_id} already has an accepted mask from another stage or import"
        )
    if existing is not None:
        existing.delete()
    source, versions = _source_of(decision)
    truth = GroundTruth.objects.create(
        radiograph_id=radiograph_id,
        mask=decision.mask,
        stage=stage,
        source=source,
        method=method,
        agreement=agreement,
    )
    # A new row: adding is setting, without reading the (empty) relations first.
    truth.model_versions.add(*versions)
    truth.readers.add(*readers)
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
