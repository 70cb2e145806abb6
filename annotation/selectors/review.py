"""Read-only queries behind the review screens. Nothing here names a candidate's source."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache

from django.contrib.auth.models import AbstractBaseUser
from django.db import connections, router
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from annotation import blinding
from annotation.lookups import unique_or_none
from annotation.models import Candidate, CaseFlag, Decision, ReviewTask, Stage
from annotation.roles import SENIOR_MD, has_role
from annotation.selectors.media_rows import media_task_row, option_mask_row
from annotation.services.consensus import adjudication_options
from annotation.services.consensus_masks import readers_consensus
from annotation.services.review import Knockout, ReviewResult, is_knockout, knockout_state
from annotation.services.review_errors import (
    LeaseLost,
    NotYourTask,
    ReviewError,
    RoundAlreadyRecorded,
    TaskAlreadyDecided,
)

PAIR_LABELS = ("A", "B")


@dataclass
class QueueRow:
    stage: Stage
    done: int
    remaining: int

    @property
    def total(self) -> int:
        return self.done + self.remaining


def reader_progress(
    *, stage: Stage, reader: AbstractBaseUser, kind: str = ReviewTask.Kind.REVIEW
) -> QueueRow:
    """What this reader has done in the stage and what is still theirs to do: their standing
    decisions; the cases they hold, plus the cases they could still be given (open, or leased
    to someone whose lease ran out; not a case they hold, decided or skipped; for a senior MD's
    adjudications, not a case they read). Every screen shows it, so the three counts are one
    written-out statement: built by the ORM they were a third of a screen's CPU time. The rule
    "open, or its lease ran out" is assignment._available's; test_review_progress checks the
    counts against the cases a reader is really given."""
    alias = router.db_for_read(ReviewTask)
    adjudication = kind == ReviewTask.Kind.ADJUDICATION
    ops = connections[alias].ops
    now = ops.adapt_datetimefield_value(timezone.now())
    params = [stage.pk, kind, reader.pk]  # done
    params += [stage.pk, kind, reader.pk, ReviewTask.Status.LEASED]  # held
    params += [stage.pk, kind, ReviewTask.Status.OPEN, ReviewTask.Status.LEASED, now]
    params += [stage.pk, kind, reader.pk]  # the reader's own cases
    params += [stage.pk, reader.pk, True, kind]  # the cases they skipped
    if adjudication:
        params += [stage.pk, ReviewTask.Kind.REVIEW, reader.pk]  # the cases they read
    with connections[alias].cursor() as cursor:
        cursor.execute(_progress_sql(alias, adjudication), params)
        done, held, cases = cursor.fetchone()
    return QueueRow(stage=stage, done=done, remaining=held + cases)


@cache
def _progress_sql(alias: str, adjudication: bool) -> str:
    qn = connections[alias].ops.quote_name
    task, decision, flag = ReviewTask._meta, Decision._meta, CaseFlag._meta

    def col(meta, name: str) -> str:
        return qn(meta.get_field(name).column)

    tasks = qn(task.db_table)

    def in_stage(t: str) -> str:
        return f"{t}.{col(task, 'stage')} = %s AND {t}.{col(task, 'kind')} = %s"

    excluded = [
        f"SELECT m.{col(task, 'radiograph')} FROM {tasks} m"
        f" WHERE {in_stage('m')} AND m.{col(task, 'reader')} = %s",
        f"SELECT f.{col(flag, 'radiograph')} FROM {qn(flag.db_table)} f"
        f" JOIN {tasks} ft ON ft.{qn(task.pk.column)} = f.{col(flag, 'task')}"
        f" WHERE f.{col(flag, 'stage')} = %s AND f.{col(flag, 'reader')} = %s"
        f" AND f.{col(flag, 'skipped')} = %s AND ft.{col(task, 'kind')} = %s",
    ]
    if adjudication:
        excluded.append(
            f"SELECT r.{col(task, 'radiograph')} FROM {tasks} r"
            f" WHERE {in_stage('r')} AND r.{col(task, 'reader')} = %s"
        )
    not_in = "".join(f" AND t.{col(task, 'radiograph')} NOT IN ({sql})" for sql in excluded)
    return (
        f"SELECT (SELECT COUNT(*) FROM {qn(decision.db_table)} d"
        f" JOIN {tasks} dt ON dt.{qn(task.pk.column)} = d.{col(decision, 'task')}"
        f" WHERE {in_stage('dt')} AND d.{col(decision, 'reader')} = %s"
        f" AND d.{col(decision, 'revoked_at')} IS NULL),"
        f" (SELECT COUNT(*) FROM {tasks} h WHERE {in_stage('h')}"
        f" AND h.{col(task, 'reader')} = %s AND h.{col(task, 'status')} = %s),"
        f" (SELECT COUNT(DISTINCT t.{col(task, 'radiograph')}) FROM {tasks} t"
        f" WHERE {in_stage('t')} AND (t.{col(task, 'status')} = %s"
        f" OR (t.{col(task, 'status')} = %s AND t.{col(task, 'lease_expires_at')} < %s))"
        f"{not_in})"
    )


def reader_queue(*, reader: AbstractBaseUser, kind: str = ReviewTask.Kind.REVIEW) -> list[QueueRow]:
    """Per stage open for review: the reader's progress, for stages where they have work."""
    rows = []
    for stage in Stage.objects.filter(status=Stage.Status.REVIEWING).select_related("dataset"):
        row = reader_progress(stage=stage, reader=reader, kind=kind)
        if row.done or row.remaining:
            rows.append(row)
    return rows


@dataclass
class Pane:
    position: int
    label: str
    mask_url: str
    token: str
    votes: int | None = None  # adjudication: how many readers chose this
    mask_inline: str = ""  # the overlay as a data: URI when the page carries it (inline_overlays)

    @property
    def mask_src(self) -> str:
        """Where the page's viewer reads this pane's overlay from."""
        return self.mask_inline or self.mask_url


@dataclass
class Screen:
    """Everything a review screen shows, in the reader's terms (positions and labels only)."""

    task: ReviewTask
    kind: str  # pairwise | nway | adjudication | draw
    image_url: str
    width: int
    height: int
    panes: list[Pane] = field(default_factory=list)
    knockout: Knockout | None = None
    done: int = 0
    total: int = 0


def _mask_url(opaque: str) -> str:
    return reverse("review_mask", kwargs={"opaque": opaque})


def task_screen(*, task: ReviewTask, reader: AbstractBaseUser, progress: bool = True) -> Screen:
    """The panes of the screen the reader should see now for this task."""
    radiograph = task.radiograph
    tokens = blinding.option_tokens(task)
    screen = Screen(
        task=task,
        kind="nway",
        image_url=reverse("review_image", kwargs={"token": task.token}),
        width=radiograph.width,
        height=radiograph.height,
    )
    if progress:
        row = reader_progress(stage=task.stage, reader=reader, kind=task.kind)
        screen.done, screen.total = row.done, row.total
    if task.kind == ReviewTask.Kind.ADJUDICATION:
        screen.kind = "adjudication"
        for position, (decision, votes) in enumerate(adjudication_options(task=task), 1):
            opaque = tokens[decision.pk]
            screen.panes.append(
                Pane(position, str(position), _mask_url(opaque), opaque, votes=votes)
            )
        return screen
    order = list(task.candidate_order)
    if is_knockout(task):
        state = knockout_state(task=task)
        screen.knockout = state
        if state.neither:
            # The drawing after "neither": start from the pair just rejected, labelled A and B
            # as it was shown (positions stay the candidates' own, as `base` names them).
            screen.kind = "draw"
            final = task.rounds.order_by("-number").first()
            for label, candidate_id in zip(
                PAIR_LABELS, (final.left_id, final.right_id), strict=True
            ):
                opaque = tokens[candidate_id]
                position = order.index(candidate_id) + 1
                screen.panes.append(Pane(position, label, _mask_url(opaque), opaque))
            return screen
        if state.number is not None:
            screen.kind = "pairwise"
            for position, candidate_id in enumerate((state.left, state.right), 1):
                opaque = tokens[candidate_id]
                screen.panes.append(
                    Pane(position, PAIR_LABELS[position - 1], _mask_url(opaque), opaque)
                )
            return screen
    # N-way (and the "start from" choices of the drawing screen): every candidate by position.
    for position, candidate_id in enumerate(order, 1):
        opaque = tokens[candidate_id]
        screen.panes.append(Pane(position, str(position), _mask_url(opaque), opaque))
    return screen


def decision_label(decision: Decision) -> str:
    """What a reader decided, in the labels their screen showed (A/B of a pair, N-way
    positions): 'chose A', 'refined 2', 'drew a mask', 'no infection'."""
    task = decision.task
    shown = None
    if decision.candidate_id is not None:
        final = task.rounds.order_by("-number").first() if is_knockout(task) else None
        if final is not None and decision.candidate_id in (final.left_id, final.right_id):
            shown = PAIR_LABELS[0 if decision.candidate_id == final.left_id else 1]
        elif decision.position:
            shown = str(decision.position)
    if decision.outcome == Decision.Outcome.CHOSE:
        return f"chose {shown}"
    if decision.outcome == Decision.Outcome.REFINED:
        return f"refined {shown}"
    return "no infection (empty mask)" if not decision.mask.area else "drew a mask"


@dataclass
class DecidedCase:
    """A reader's decision on one case, as the undo confirmation and the read-only screen of
    a decided case show it: the case's number in their stage, the image, the chosen mask."""

    decision: Decision
    number: int
    label: str
    image_url: str
    mask_url: str
    undoable: bool  # the reader's last decision in an open stage, not yet final


def decided_case(*, decision: Decision, reader: AbstractBaseUser) -> DecidedCase:
    task = decision.task
    earlier = Decision.objects.filter(
        Q(created_at__lt=decision.created_at)
        | Q(created_at=decision.created_at, pk__lte=decision.pk),
        reader=reader,
        task__stage_id=task.stage_id,
        task__kind=task.kind,
        revoked_at__isnull=True,
    )
    if decision.outcome == Decision.Outcome.CHOSE:
        # The very overlay URL the pane had: the same blinded per-task name.
        mask_url = _mask_url(blinding.option_tokens(task)[decision.candidate_id])
    else:
        mask_url = _mask_url(blinding.result_token(task))
    last = reader_last_decision(stage=task.stage, reader=reader)
    return DecidedCase(
        decision=decision,
        number=earlier.count(),
        label=decision_label(decision),
        image_url=reverse("review_image", kwargs={"token": task.token}),
        mask_url=mask_url,
        undoable=(
            last is not None
            and last.pk == decision.pk
            and task.kind == ReviewTask.Kind.REVIEW
            and task.stage.status == Stage.Status.REVIEWING
        ),
    )


def reader_last_decision(*, stage: Stage, reader: AbstractBaseUser) -> Decision | None:
    """The decision 'Undo last decision' takes back (annotation.services.review.decision_undo
    picks the same one)."""
    return (
        Decision.objects.filter(
            reader=reader,
            task__stage=stage,
            task__kind=ReviewTask.Kind.REVIEW,
            revoked_at__isnull=True,
        )
        .select_related("task__stage", "task__radiograph", "mask")
        .order_by("-created_at", "-id")
        .first()
    )


def reader_decision(*, task: ReviewTask, reader: AbstractBaseUser) -> Decision | None:
    """The reader's standing decision on a task of theirs, if they decided it."""
    return unique_or_none(
        task.decisions.filter(reader=reader, revoked_at__isnull=True).select_related(
            "task__stage", "task__radiograph", "mask"
        )
    )


def option_mask(*, task: ReviewTask, option_id: int):
    """The stored mask behind an option of the task (candidate, or a reader's decision)."""
    if task.kind == ReviewTask.Kind.ADJUDICATION:
        return Decision.objects.select_related("mask").get(pk=option_id).mask
    return Candidate.objects.select_related("mask").get(pk=option_id).mask


def option_masks(*, task: ReviewTask) -> dict:
    """Option id -> stored mask, for every option of the task, in one query."""
    model = Decision if task.kind == ReviewTask.Kind.ADJUDICATION else Candidate
    # Unordered: the models' default orderings would join stage, case and dataset to sort.
    rows = model.objects.select_related("mask").filter(pk__in=list(task.candidate_order)).order_by()
    return {row.pk: row.mask for row in rows}


def candidate_at_position(*, task: ReviewTask, position: int) -> Candidate | None:
    """The candidate a review task shows at `position` (1-based, the panes of its N-way or
    drawing screen), for 'refine' by position; None when there is no such pane."""
    order = list(task.candidate_order)
    if task.kind != ReviewTask.Kind.REVIEW or not 1 <= position <= len(order):
        return None
    return unique_or_none(Candidate.objects.filter(pk=order[position - 1]))


def media_task(*, token: str, reader: AbstractBaseUser) -> ReviewTask | None:
    """The task whose images a reader may fetch: theirs (leased or decided), and adjudication
    tasks only for senior MDs. None otherwise, so every refusal looks like a missing image."""
    task = media_task_row(token=token, reader_id=reader.pk)
    if task is None or task.status == ReviewTask.Status.CANCELLED:
        return None
    if task.kind == ReviewTask.Kind.ADJUDICATION and not has_role(reader, SENIOR_MD):
        return None
    return task


@dataclass
class MediaImage:
    """An image a reader may fetch: its ETag (from the database alone) and how to read it."""

    etag: str
    read: Callable[[], bytes]


def media_overlay(*, opaque: str, reader: AbstractBaseUser) -> MediaImage | None:
    """The overlay an opaque option name stands for, if this reader may see it."""
    task_token, signature = blinding.split_token(opaque)
    task = media_task(token=task_token, reader=reader)
    if task is not None and blinding.is_result(task, signature):
        decided = reader_decision(task=task, reader=reader)
        if decided is None:
            return None
        return _overlay_image(opaque, decided.mask, task.radiograph)
    option_id = blinding.resolve_option(task, signature) if task is not None else None
    if option_id is None:
        return None
    adjudication = task.kind == ReviewTask.Kind.ADJUDICATION
    mask = option_mask_row(
        option_model=Decision if adjudication else Candidate, option_id=option_id
    )
    return _overlay_image(opaque, mask, task.radiograph)


def _overlay_image(opaque: str, mask, radiograph) -> MediaImage:
    return MediaImage(
        etag=blinding.image_etag(opaque, blinding.overlay_identity(mask, radiograph=radiograph)),
        read=lambda: blinding.mask_overlay(mask, radiograph=radiograph),
    )


def media_image(*, token: str, reader: AbstractBaseUser) -> MediaImage | None:
    """The CXR of a task as a reader receives it, if this reader may see it."""
    task = media_task(token=token, reader=reader)
    if task is None:
        return None
    radiograph = task.radiograph
    return MediaImage(
        etag=blinding.image_etag(token, blinding.display_identity(radiograph)),
        read=lambda: blinding.display_png(radiograph),
    )


def media_overlay_png(*, opaque: str, reader: AbstractBaseUser) -> bytes | None:
    """The overlay PNG an opaque option name stands for, if this reader may see it."""
    image = media_overlay(opaque=opaque, reader=reader)
    return image.read() if image is not None else None


def media_consensus_png(*, token: str, reader: AbstractBaseUser) -> bytes | None:
    """The STAPLE consensus of an adjudication's options as an overlay, for its senior MD."""
    task = media_task(token=token, reader=reader)
    if task is None or task.kind != ReviewTask.Kind.ADJUDICATION or len(task.candidate_order) < 2:
        return None
    # Every stored mask is at the case's working resolution, and so is their consensus.
    masks = [option_mask(task=task, option_id=pk) for pk in task.candidate_order]
    return blinding.overlay_png(readers_consensus(masks))


def media_image_png(*, token: str, reader: AbstractBaseUser) -> bytes | None:
    """The CXR of a task as a reader receives it, if this reader may see it."""
    image = media_image(token=token, reader=reader)
    return image.read() if image is not None else None


def task_mask_urls(*, task: ReviewTask) -> list[str]:
    """Every option's overlay URL, in the task's stored order."""
    return [_mask_url(opaque) for opaque in blinding.option_tokens(task).values()]


def task_overlays(*, task: ReviewTask) -> dict[str, bytes]:
    """Every option's overlay PNG by its opaque name, rendered (and cached) now, so that
    serving any of them takes the same path and the same time whichever mask it is.
    Candidates' overlays are rendered when they are offered (candidates_offer), so on the
    screen this is one query and cache hits."""
    tokens = blinding.option_tokens(task)
    return {
        tokens[option_id]: blinding.mask_overlay(mask, radiograph=task.radiograph)
        for option_id, mask in option_masks(task=task).items()
    }


# Overlays are 1-bit PNGs of a few KB. Up to this much in all, a screen carries its panes'
# overlays in the page: one request instead of one per mask. Decided for the whole screen,
# never per mask, so what a page carries says nothing about any one mask.
INLINE_OVERLAYS_MAX_BYTES = 48 * 1024


def inline_overlays(screen: Screen) -> bool:
    """Render every overlay of the screen's task (task_overlays) and give every pane its own as
    a data: URI, unless together they exceed INLINE_OVERLAYS_MAX_BYTES; whether they were given."""
    overlays = task_overlays(task=screen.task)
    shown = [overlays[pane.token] for pane in screen.panes]
    if sum(len(data) for data in shown) > INLINE_OVERLAYS_MAX_BYTES:
        return False
    for pane, data in zip(screen.panes, shown, strict=True):
        pane.mask_inline = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return True


# --- which page the browser shows next ---------------------------------------------------------


def task_page(task: ReviewTask) -> str:
    """The page of a case: its screen as it stands (a drawing screen sends on to draw_page)."""
    return reverse("review_task", kwargs={"token": task.token})


def draw_page(task: ReviewTask) -> str:
    return reverse("review_draw", kwargs={"token": task.token})


def stage_page(stage: Stage, kind: str) -> str:
    """The page that leases the reader's next case of the stage (or says none is left)."""
    name = "review_adjudicate_next" if kind == ReviewTask.Kind.ADJUDICATION else "review_next"
    return reverse(name, kwargs={"stage_id": stage.pk})


def reader_next_task(*, task: ReviewTask, reader: AbstractBaseUser) -> ReviewTask | None:
    """The case the reader already holds next in the task's stage: the one leased ahead while
    they looked at this one."""
    return (
        ReviewTask.objects.filter(
            stage_id=task.stage_id, kind=task.kind, reader=reader, status=ReviewTask.Status.LEASED
        )
        .exclude(pk=task.pk)
        .order_by("id")
        .first()
    )


def next_page(*, task: ReviewTask, reader: AbstractBaseUser) -> str:
    """Where the reader goes once `task` is decided: straight to the case they hold next (its
    screen may be prerendered already), else the stage's page that leases one."""
    nxt = reader_next_task(task=task, reader=reader)
    return task_page(nxt) if nxt is not None else stage_page(task.stage, task.kind)


def screen_page(screen: Screen) -> str:
    return draw_page(screen.task) if screen.kind == "draw" else task_page(screen.task)


def result_page(*, result: ReviewResult, reader: AbstractBaseUser) -> str:
    """Where the reader goes after a review action: the next case once this one is decided,
    the drawing after "neither", else this case's next round."""
    if result.decision is not None:
        return next_page(task=result.task, reader=reader)
    if result.knockout is not None and result.knockout.neither:
        return draw_page(result.task)
    return task_page(result.task)


def refusal_page(error: ReviewError) -> str | None:
    """Where a refusal sends the reader, with its message: to the queue when the case is not
    theirs, on when it is decided (in another tab), back to the case when a round was already
    played; None to stay on the screen (the request did not fit, nothing changed)."""
    if isinstance(error, NotYourTask | LeaseLost):
        return reverse("review_queue")
    if isinstance(error, TaskAlreadyDecided) and error.decision is not None:
        return next_page(task=error.decision.task, reader=error.decision.reader)
    if isinstance(error, RoundAlreadyRecorded):
        return task_page(error.round.task)
    return None
