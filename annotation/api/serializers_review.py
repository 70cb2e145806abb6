"""What the review API sends an MD: screens by position and label, and their own decisions.

Nothing here names a candidate, a mask, a network or a source: panes come from
annotation.selectors.review.task_screen (positions, labels, opaque option tokens) and images
are served by opaque, access-checked URLs of the review API itself. Every field is listed in
REVIEW_FIELDS, which the leak test checks every response against.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.reverse import reverse

from annotation.lookups import unique_or_none
from annotation.models import CaseFlag, Decision, PairwiseRound, ReviewTask, Stage
from annotation.selectors.review import (
    Screen,
    reader_progress,
    screen_page,
    task_overlays,
    task_screen,
)

SCREEN_KINDS = ("pairwise", "nway", "draw", "adjudication", "done")
ACTIONS = ("chose", "refined", "drew")
ROUND_CHOICES = ("A", "B", "neither")


class PaneOut(serializers.Serializer):
    position = serializers.IntegerField(help_text="1-based; what a pick or a refine names")
    label = serializers.CharField(help_text="A / B in a pairwise round, else the position")
    mask_url = serializers.CharField(help_text="the overlay PNG, by an opaque name")
    votes = serializers.IntegerField(
        allow_null=True, help_text="adjudication: how many readers chose this"
    )


class KnockoutOut(serializers.Serializer):
    round = serializers.IntegerField(help_text="the round to play now")
    rounds = serializers.IntegerField(help_text="rounds in this case's knockout")


class DecisionOut(serializers.Serializer):
    action = serializers.ChoiceField(choices=ACTIONS)
    position = serializers.IntegerField(allow_null=True)
    decided_at = serializers.DateTimeField()


class RoundOut(serializers.Serializer):
    number = serializers.IntegerField()
    choice = serializers.ChoiceField(choices=ROUND_CHOICES)


class ScreenOut(serializers.Serializer):
    task = serializers.CharField(help_text="the task token: the case's handle in this API")
    stage = serializers.IntegerField()
    kind = serializers.ChoiceField(
        choices=SCREEN_KINDS,
        help_text="pairwise: pick A or B (or neither) in round `knockout.round`; nway: pick a "
        "position; draw: send a drawing, blank or refining a position; adjudication: pick "
        "a position; done: decided (see `decision`)",
    )
    image_url = serializers.CharField()
    width = serializers.IntegerField(help_text="the CXR's size in pixels")
    height = serializers.IntegerField()
    mask_width = serializers.IntegerField(help_text="a drawing's size: the working resolution")
    mask_height = serializers.IntegerField()
    panes = PaneOut(many=True)
    knockout = KnockoutOut(allow_null=True)
    done = serializers.IntegerField(help_text="cases you have decided in this stage")
    total = serializers.IntegerField(help_text="done + still yours to do")
    lease_expires_at = serializers.DateTimeField(allow_null=True)
    decision = DecisionOut(allow_null=True)
    page_url = serializers.CharField(help_text="this case's page in the browser")


class QueueRowOut(serializers.Serializer):
    stage = serializers.IntegerField()
    number = serializers.IntegerField()
    name = serializers.CharField()
    mode = serializers.ChoiceField(choices=Stage.Mode.choices)
    kind = serializers.ChoiceField(choices=ReviewTask.Kind.choices)
    done = serializers.IntegerField()
    remaining = serializers.IntegerField()
    total = serializers.IntegerField()
    next_url = serializers.CharField(help_text="POST here (with this kind) for the next case")


class ResultOut(serializers.Serializer):
    decision = DecisionOut(allow_null=True)
    round = RoundOut(allow_null=True)
    screen = ScreenOut(allow_null=True, help_text="what this case shows now, while undecided")
    replayed = serializers.BooleanField(help_text="a retry: the stored result, nothing changed")
    next_url = serializers.CharField(help_text="POST here for the next case")
    page_url = serializers.CharField(
        help_text="the browser page to show now: this case's next round or drawing, or (once "
        "decided) your next case"
    )


class ConflictOut(serializers.Serializer):
    detail = serializers.CharField()
    decision = DecisionOut(allow_null=True, required=False)
    round = RoundOut(allow_null=True, required=False)
    page_url = serializers.CharField(
        required=False,
        help_text="the browser page this leaves you on (absent: stay, nothing changed)",
    )


class AheadOut(serializers.Serializer):
    page_url = serializers.CharField(
        allow_null=True, help_text="the page of your next case, leased ahead; null: none"
    )
    prefetch = serializers.ListField(
        child=serializers.CharField(),
        help_text="what that page will fetch: its image, and its masks' URLs unless the page "
        "carries the masks itself (as it does when they are small)",
    )


class KeepOut(serializers.Serializer):
    lease_expires_at = serializers.DateTimeField()
    lease_seconds = serializers.IntegerField(help_text="how long a lease runs from a renewal")


class FlagOut(serializers.Serializer):
    reason = serializers.ChoiceField(choices=CaseFlag.Reason.choices)
    comment = serializers.CharField(allow_blank=True)
    skipped = serializers.BooleanField(help_text="the case went to another reader")
    flagged_at = serializers.DateTimeField()
    replayed = serializers.BooleanField(help_text="a retry: the stored flag, nothing changed")
    page_url = serializers.CharField(
        help_text="the browser page to show now: this case, or (after a skip) your next case"
    )


class WorkRowOut(serializers.Serializer):
    case = serializers.IntegerField(help_text="its place in your list, in the order you decided")
    task = serializers.CharField(help_text="the task token: the case's handle in this API")
    decision = DecisionOut()
    decision_key = serializers.CharField(help_text="the key the decision was made with")
    time_on_screen_ms = serializers.IntegerField()
    image_url = serializers.CharField()
    mask_url = serializers.CharField(help_text="the mask you decided on, by an opaque name")
    reopen = serializers.BooleanField(help_text="false once the case is final")
    final = serializers.CharField(allow_blank=True, help_text="why it is final, if it is")


def _fields(serializer: type[serializers.Serializer]) -> set[str]:
    return set(serializer().fields)


# Every key the review API may send (the leak test holds responses to it).
REVIEW_FIELDS = frozenset().union(
    *map(
        _fields,
        (PaneOut, KnockoutOut, DecisionOut, RoundOut, ScreenOut, QueueRowOut, ResultOut),
    ),
    *map(_fields, (ConflictOut, AheadOut, KeepOut, FlagOut, WorkRowOut)),
)


def next_url(stage: Stage, request: Request) -> str:
    return reverse("api:review-next", kwargs={"stage_id": stage.pk}, request=request)


def page_url(path: str, request: Request) -> str:
    """A browser page of the review screens, as an absolute URL like the API's own."""
    return request.build_absolute_uri(path)


def decision_data(decision: Decision) -> dict[str, Any]:
    # An adjudicator who picks one of the readers' choices is told "chose": whether that was a
    # drawing is the readers' business. Their own drawing or refinement is theirs to know.
    picked = (
        decision.task.kind == ReviewTask.Kind.ADJUDICATION
        and decision.position is not None
        and decision.mask.author_id != decision.reader_id
    )
    return {
        "action": Decision.Outcome.CHOSE if picked else decision.outcome,
        "position": decision.position,
        "decided_at": decision.created_at,
    }


def round_data(row: PairwiseRound) -> dict[str, Any]:
    choice = "neither" if row.winner_id is None else "A" if row.winner_id == row.left_id else "B"
    return {"number": row.number, "choice": choice}


def _pane_urls(screen: Screen, request: Request) -> tuple[str, list[dict[str, Any]]]:
    image = reverse("api:review-image", kwargs={"token": screen.task.token}, request=request)
    panes = [
        {
            "position": pane.position,
            "label": pane.label,
            "mask_url": reverse("api:review-mask", kwargs={"opaque": pane.token}, request=request),
            "votes": pane.votes,
        }
        for pane in screen.panes
    ]
    return image, panes


def screen_data(*, task: ReviewTask, reader: AbstractBaseUser, request: Request) -> dict:
    """The task's screen as the reader should see it now (kind "done" once decided)."""
    decided = task.status == ReviewTask.Status.DONE
    if decided:
        # Progress only: the panes of a decided case are not shown again.
        screen = Screen(
            task=task,
            kind="done",
            image_url="",
            width=task.radiograph.width,
            height=task.radiograph.height,
        )
        row = reader_progress(stage=task.stage, reader=reader, kind=task.kind)
        screen.done, screen.total = row.done, row.total
    else:
        screen = task_screen(task=task, reader=reader)
        # Render every overlay now, so serving any of them takes the same (cached) path.
        task_overlays(task=task)
    image_url, panes = _pane_urls(screen, request)
    decision = unique_or_none(
        task.decisions.filter(reader=reader, revoked_at__isnull=True).select_related("task")
    )
    knockout = screen.knockout
    return {
        "task": task.token,
        "stage": task.stage_id,
        "kind": screen.kind,
        "image_url": image_url,
        "width": screen.width,
        "height": screen.height,
        "mask_width": task.radiograph.work_width,
        "mask_height": task.radiograph.work_height,
        "panes": panes,
        "knockout": (
            {"round": knockout.number, "rounds": knockout.total_rounds}
            if screen.kind == "pairwise" and knockout is not None
            else None
        ),
        "done": screen.done,
        "total": screen.total,
        "lease_expires_at": None if decided else task.lease_expires_at,
        "decision": decision_data(decision) if decision is not None else None,
        "page_url": page_url(screen_page(screen), request),
    }
