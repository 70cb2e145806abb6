"""The review API for MDs and senior MDs: their queue, the next case, its screen, decisions.
It is the one JSON protocol of the review: review.js and cm-draft.js talk to it with the
browser's session and CSRF token, scripts with an API token (what only the screens need
besides, keep-alive, look-ahead and drafts, is in views_review_screen.py).

The same services as the browser screens and the same blinding: a screen names panes by
position and label, with opaque, access-checked image URLs; no candidate, mask, network or
source appears. Every write carries the client's idempotency_key: a retry with the same key
answers 200 with the stored result; another key (a second tab) on a case already decided
answers 409 with the decision that stands. Answers carry `page_url`, the browser page the
screens go to next.

Status codes are the review errors' own (annotation.services.review_errors): 400 the request is
malformed (or the drawing unusable); 404 the case is not in your queue (never had it, or it
went to another reader: the two look the same); 409 the request is well formed but does not
fit the case as it stands (another round is current, no such position, stage closed, already
decided, nothing to undo).
"""

from __future__ import annotations

from django.core.validators import RegexValidator
from django.http import HttpResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.parsers import JSONParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.api.base import MAX_ID, ApiView
from annotation.api.fields import (
    StrictBooleanField,
    StrictCharField,
    StrictChoiceField,
    StrictIntegerField,
    UploadField,
)
from annotation.api.permissions import IsMD, IsReader
from annotation.api.schema import ErrorDetail
from annotation.api.serializers_review import (
    ConflictOut,
    QueueRowOut,
    ResultOut,
    ScreenOut,
    decision_data,
    next_url,
    page_url,
    round_data,
    screen_data,
)
from annotation.api.views_data import PNG
from annotation.lookups import unique_or_none
from annotation.middleware import FORM_OVERHEAD, body_limit
from annotation.models import ReviewTask, Stage
from annotation.roles import MD, SENIOR_MD, has_role
from annotation.selectors.review import (
    candidate_at_position,
    media_image,
    media_overlay,
    reader_queue,
    refusal_page,
    result_page,
)
from annotation.services.assignment import (
    task_held,
    task_lease_next,
    task_lease_renew,
)
from annotation.services.audit import client_ip
from annotation.services.decisions import DRAWING_MAX_BYTES, KEY_HELP, KEY_PATTERN
from annotation.services.interactive import refinement_check
from annotation.services.review import (
    CHOICES,
    ReviewResult,
    adjudication_record_drawing,
    decision_record_drawing,
    decision_undo,
    pick_record,
    round_record,
    round_undo,
)
from annotation.services.review_errors import (
    InvalidChoice,
    ReviewError,
    RoundAlreadyRecorded,
    TaskAlreadyDecided,
)
from annotation.views.review_media import media_response

KINDS = [(k, k) for k in ReviewTask.Kind.values]
CONFLICT = OpenApiResponse(
    response=ConflictOut,
    description="does not fit the case as it stands; a decided case comes with its decision",
)
NOT_YOURS = OpenApiResponse(response=ConflictOut, description="this case is not in your queue")


def key_field(help_text: str) -> StrictCharField:
    return StrictCharField(
        validators=[RegexValidator(KEY_PATTERN)],
        min_length=8,
        max_length=64,
        help_text=help_text,
    )


def ms_field() -> StrictIntegerField:
    return StrictIntegerField(
        min_value=0, max_value=2**31 - 1, default=0, help_text="time spent on the screen"
    )


DECISION_KEY = f"a fresh key per decision ({KEY_HELP}); resend it on retry"


def review_error(exc: ReviewError, request) -> Response:
    """A service refusal as the API answers it, with the error's own status; nothing was
    changed. `page_url` names the browser page the refusal leaves the reader on, if another."""
    body: dict = {"detail": str(exc)}
    if isinstance(exc, TaskAlreadyDecided) and exc.decision is not None:
        body["decision"] = decision_data(exc.decision)
    elif isinstance(exc, RoundAlreadyRecorded):
        body["round"] = round_data(exc.round)
    page = refusal_page(exc)
    if page is not None:
        body["page_url"] = page_url(page, request)
    return Response(body, status=exc.status)


def _stage(stage_id: int) -> Stage:
    stage = unique_or_none(Stage.objects.filter(pk=stage_id)) if stage_id <= MAX_ID else None
    if stage is None:
        raise NotFound(f"stage {stage_id} does not exist")
    return stage


def held(request, token: str) -> ReviewTask:
    """The case behind a token, if it is in your queue (NotYourTask: 404 otherwise)."""
    return task_held(token=token, reader=request.user)


def _screen(request, task: ReviewTask) -> dict:
    return screen_data(task=task, reader=request.user, request=request)


class ReviewView(ApiView, APIView):
    permission_classes = [IsReader]
    parser_classes = [JSONParser]
    pagination_class = None  # a reader's queue is a few stages

    def handle_exception(self, exc):
        if isinstance(exc, ReviewError):
            return review_error(exc, self.request)
        return super().handle_exception(exc)


class QueueView(ReviewView):
    """The stages open for review where you have work: done and remaining, per kind of task
    (review for MDs, adjudication for senior MDs)."""

    @extend_schema(responses={200: QueueRowOut(many=True)})
    def get(self, request):
        rows = []
        for role, kind in ((MD, ReviewTask.Kind.REVIEW), (SENIOR_MD, ReviewTask.Kind.ADJUDICATION)):
            if not has_role(request.user, role):
                continue
            for row in reader_queue(reader=request.user, kind=kind):
                rows.append(
                    {
                        "stage": row.stage.pk,
                        "number": row.stage.number,
                        "name": row.stage.name,
                        "mode": row.stage.mode,
                        "kind": kind,
                        "done": row.done,
                        "remaining": row.remaining,
                        "total": row.total,
                        "next_url": next_url(row.stage, request),
                    }
                )
        return Response(rows)


class LeaseIn(serializers.Serializer):
    kind = StrictChoiceField(
        choices=KINDS,
        required=False,
        help_text="review (MDs) or adjudication (senior MDs); default: review for MDs",
    )


class NextView(ReviewView):
    """Your next case of the stage: the one you hold, else a newly leased one. 204: none left."""

    @extend_schema(
        request=LeaseIn,
        responses={
            200: ScreenOut,
            204: OpenApiResponse(description="nothing left for you in this stage (or closed)"),
            409: OpenApiResponse(response=ErrorDetail, description="not open for review yet"),
        },
    )
    def post(self, request, stage_id: int):
        given = LeaseIn(data=request.data)
        given.is_valid(raise_exception=True)
        default = ReviewTask.Kind.REVIEW if has_role(request.user, MD) else "adjudication"
        kind = given.validated_data.get("kind", default)
        needed = SENIOR_MD if kind == ReviewTask.Kind.ADJUDICATION else MD
        if not has_role(request.user, needed):
            raise PermissionDenied(f"{kind} tasks are not for your role")
        stage = _stage(stage_id)
        if stage.status == Stage.Status.CLOSED:
            # Its last case was accepted: nothing left, as for the browser screens.
            return Response(status=status.HTTP_204_NO_CONTENT)
        task = task_lease_next(stage=stage, reader=request.user, kind=kind)
        if task is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(_screen(request, task))


class TaskView(ReviewView):
    """The screen of a case you hold (looking at it renews your lease), or its decision."""

    @extend_schema(responses={200: ScreenOut, 404: NOT_YOURS, 409: CONFLICT})
    def get(self, request, token: str):
        task = held(request, token)
        if task.status == ReviewTask.Status.LEASED:
            task_lease_renew(task=task, reader=request.user)
            task.refresh_from_db(fields=["lease_expires_at"])
        return Response(_screen(request, task))


def _result(request, result: ReviewResult) -> Response:
    screen = None
    if result.decision is None:
        screen = _screen(request, held(request, result.task.token))
    body = {
        "decision": decision_data(result.decision) if result.decision is not None else None,
        "round": round_data(result.round) if result.round is not None else None,
        "screen": screen,
        "replayed": result.replayed,
        "next_url": next_url(result.task.stage, request),
        "page_url": page_url(result_page(result=result, reader=request.user), request),
    }
    return Response(body, status=status.HTTP_200_OK if result.replayed else status.HTTP_201_CREATED)


RESULT = {200: ResultOut, 201: ResultOut, 404: NOT_YOURS, 409: CONFLICT}


class RoundIn(serializers.Serializer):
    number = StrictIntegerField(min_value=1, max_value=32767, help_text="knockout.round")
    choice = StrictChoiceField(choices=[(c, c) for c in CHOICES])
    idempotency_key = key_field(DECISION_KEY)
    time_on_screen_ms = ms_field()


class RoundView(ReviewView):
    """One pairwise round: A, B, or neither (then draw). The last round's winner is your
    decision; the answer carries the next round's screen until then."""

    permission_classes = [IsMD]

    @extend_schema(request=RoundIn, responses=RESULT)
    def post(self, request, token: str):
        task = held(request, token)  # someone else's case: 404 whatever the body says
        given = RoundIn(data=request.data)
        given.is_valid(raise_exception=True)
        return _result(
            request,
            round_record(
                task=task,
                reader=request.user,
                client_ip=client_ip(request),
                **given.validated_data,
            ),
        )


class RoundUndoIn(serializers.Serializer):
    number = StrictIntegerField(
        min_value=1,
        max_value=32767,
        help_text="the last round played (on a pairwise screen: knockout.round - 1): only that round "
        "is taken back, so a retry never takes back the round before it",
    )


class RoundUndoView(ReviewView):
    """Take back the last round of a pairwise case you are deciding (after "neither": back to
    the pair). Nothing else changes; your decision on an earlier case is the stage's undo.
    The answer carries the round's screen again."""

    permission_classes = [IsMD]

    @extend_schema(request=RoundUndoIn, responses=RESULT)
    def post(self, request, token: str):
        task = held(request, token)
        given = RoundUndoIn(data=request.data)
        given.is_valid(raise_exception=True)
        return _result(
            request,
            round_undo(
                task=task,
                reader=request.user,
                client_ip=client_ip(request),
                **given.validated_data,
            ),
        )


class PickIn(serializers.Serializer):
    position = StrictIntegerField(min_value=1, max_value=32767, help_text="a pane's position")
    idempotency_key = key_field(DECISION_KEY)
    time_on_screen_ms = ms_field()


class PickView(ReviewView):
    """Pick the pane at a position: an N-way case, or (senior MDs) an adjudication."""

    @extend_schema(request=PickIn, responses=RESULT)
    def post(self, request, token: str):
        task = held(request, token)
        given = PickIn(data=request.data)
        given.is_valid(raise_exception=True)
        return _result(
            request,
            pick_record(
                task=task,
                reader=request.user,
                client_ip=client_ip(request),
                **given.validated_data,
            ),
        )


class DrawingIn(serializers.Serializer):
    mask = UploadField(help_text="PNG at mask_width × mask_height; nonzero pixels are infection")
    idempotency_key = key_field(DECISION_KEY)
    base = StrictIntegerField(
        required=False,
        min_value=1,
        max_value=32767,
        help_text="the position of the pane this drawing refines; absent: drawn from blank",
    )
    no_infection = StrictBooleanField(
        default=False, help_text="true to submit an empty drawing: no infection visible"
    )
    from_consensus = StrictBooleanField(
        default=False,
        help_text="adjudication: the drawing started from the readers' consensus (STAPLE); "
        "sent unchanged, it is accepted as that consensus",
    )
    clicks = serializers.JSONField(
        binary=True,
        default=list,
        help_text='click-to-refine: the clicks given, JSON [{"x": …, "y": …, "positive": …}]',
    )
    zones = serializers.JSONField(
        binary=True, default=list, help_text="click-to-refine: the lung zones ticked, JSON list"
    )
    interactive_model = StrictIntegerField(
        required=False,
        min_value=1,
        max_value=MAX_ID,
        help_text="click-to-refine: the model version the refine answers named",
    )
    time_on_screen_ms = ms_field()


@body_limit(DRAWING_MAX_BYTES + FORM_OVERHEAD)
class DrawingView(ReviewView):
    """Reject the candidates and send your own mask: drawn from blank, or refining a pane. In an
    adjudication (senior MDs), the mask drawn or refined from a reader's becomes the accepted one."""

    permission_classes = [IsReader]  # a senior MD draws in adjudication
    parser_classes = [MultiPartParser]

    @extend_schema(request={"multipart/form-data": DrawingIn}, responses=RESULT)
    def post(self, request, token: str):
        task = held(request, token)
        given = DrawingIn(data=request.data)
        given.is_valid(raise_exception=True)
        data = given.validated_data
        refinement = refinement_check(
            task=task,
            clicks=data["clicks"],
            zones=data["zones"],
            model_version=data.get("interactive_model"),
        )
        if task.kind == ReviewTask.Kind.ADJUDICATION:
            # A senior MD's own mask, blank or refining one of the readers' (by position).
            result = adjudication_record_drawing(
                task=task,
                reader=request.user,
                png=data["mask"].read(),
                base_position=data.get("base"),
                from_consensus=data["from_consensus"],
                no_infection=data["no_infection"],
                idempotency_key=data["idempotency_key"],
                time_on_screen_ms=data["time_on_screen_ms"],
                refinement=refinement,
                client_ip=client_ip(request),
            )
            return _result(request, result)
        if data["from_consensus"]:
            raise InvalidChoice("only an adjudication starts from the readers' consensus")
        base = None
        if "base" in data:
            base = candidate_at_position(task=task, position=data["base"])
            if base is None:
                raise InvalidChoice(f"this case shows no pane at position {data['base']}")
        result = decision_record_drawing(
            task=task,
            reader=request.user,
            png=data["mask"].read(),
            base=base,
            no_infection=data["no_infection"],
            idempotency_key=data["idempotency_key"],
            time_on_screen_ms=data["time_on_screen_ms"],
            refinement=refinement,
            client_ip=client_ip(request),
        )
        return _result(request, result)


class UndoIn(serializers.Serializer):
    idempotency_key = key_field(
        "the key your last decision in this stage was made with: only that decision is "
        "taken back, so a retried undo never takes back the one before it; absent: your last "
        "decision, whichever it is"
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["idempotency_key"].required = False


class UndoView(ReviewView):
    """Take back your last decision in the stage; the case is yours again, as it was shown."""

    permission_classes = [IsMD]

    @extend_schema(request=UndoIn, responses={200: ScreenOut, 404: NOT_YOURS, 409: CONFLICT})
    def post(self, request, stage_id: int):
        given = UndoIn(data=request.data)
        given.is_valid(raise_exception=True)
        stage = _stage(stage_id)
        result = decision_undo(
            stage=stage,
            reader=request.user,
            client_ip=client_ip(request),
            **given.validated_data,
        )
        return Response(_screen(request, result.task))


class ImageView(ReviewView):
    """The CXR of a case you hold or decided."""

    @extend_schema(responses={(200, "image/png"): PNG})
    def get(self, request, token: str):
        return _png(request, media_image(token=token, reader=request.user))


class MaskView(ReviewView):
    """A pane's overlay: 1-bit PNG, index 1 = infection, the same encoding for every mask."""

    @extend_schema(responses={(200, "image/png"): PNG})
    def get(self, request, opaque: str):
        return _png(request, media_overlay(opaque=opaque, reader=request.user))


def _png(request, image) -> HttpResponse:
    response = media_response(request, image)
    if response is None:
        raise NotFound("no such image")
    return response
