"""The review API's worklist endpoints: your decided cases in a stage (reopen one while it is
not final), and flagging or skipping a case you hold. The same services, blinding, keys and
status codes as the rest of the review API (annotation/api/views_review.py)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response

from annotation.api.fields import StrictCharField, StrictChoiceField
from annotation.api.permissions import IsMD
from annotation.api.serializers_review import (
    FlagOut,
    ScreenOut,
    WorkRowOut,
    decision_data,
    page_url,
)
from annotation.api.views_review import (
    CONFLICT,
    NOT_YOURS,
    ReviewView,
    _screen,
    _stage,
    held,
    key_field,
)
from annotation.models import CaseFlag, Decision
from annotation.selectors.review import next_page, task_page
from annotation.selectors.worklist import reader_worklist
from annotation.services.audit import client_ip
from annotation.services.flags import COMMENT_MAX, case_flag
from annotation.services.review import decision_reopen
from annotation.services.review_errors import NotYourTask


class CasesView(ReviewView):
    """Your decided cases in the stage, in the order you decided them, with the mask you
    decided on and whether the case can still be reopened."""

    @extend_schema(responses={200: WorkRowOut(many=True)})
    def get(self, request, stage_id: int):
        stage = _stage(stage_id)
        return Response(
            [
                {
                    "case": row.number,
                    "task": row.task.token,
                    "decision": decision_data(row.decision),
                    "decision_key": row.decision.idempotency_key,
                    "time_on_screen_ms": row.decision.time_on_screen_ms,
                    "image_url": request.build_absolute_uri(row.image_url),
                    "mask_url": request.build_absolute_uri(row.mask_url),
                    "reopen": row.reopen,
                    "final": row.final,
                }
                for row in reader_worklist(stage=stage, reader=request.user)
            ]
        )


class ReopenIn(serializers.Serializer):
    idempotency_key = key_field(
        "the key the decision to reopen was made with (decision_key in your cases): a retry "
        "never takes back a decision made since"
    )


class ReopenView(ReviewView):
    """Reopen one of your decided cases while it is not final: the decision is taken back and
    the case is yours again, as it was shown."""

    permission_classes = [IsMD]

    @extend_schema(request=ReopenIn, responses={200: ScreenOut, 404: NOT_YOURS, 409: CONFLICT})
    def post(self, request, token: str):
        task = held(request, token)
        given = ReopenIn(data=request.data)
        given.is_valid(raise_exception=True)
        decision = Decision.objects.filter(
            task=task, reader=request.user, idempotency_key=given.validated_data["idempotency_key"]
        ).first()
        if decision is None:
            raise NotYourTask("no decision of yours on this case was made with this key")
        result = decision_reopen(
            decision=decision, reader=request.user, client_ip=client_ip(request)
        )
        return Response(_screen(request, result.task))


class FlagIn(serializers.Serializer):
    reason = StrictChoiceField(choices=CaseFlag.Reason.choices)
    comment = StrictCharField(
        required=False,
        allow_blank=True,
        max_length=COMMENT_MAX,
        default="",
        help_text="what is wrong; needed when the reason is 'other'",
    )
    idempotency_key = key_field("a fresh key per flag; resend it on retry")


FLAGGED = {200: FlagOut, 201: FlagOut, 404: NOT_YOURS, 409: CONFLICT}


class FlagView(ReviewView):
    """Flag a case you hold for an admin (it stays yours)."""

    skip = False

    @extend_schema(request=FlagIn, responses=FLAGGED)
    def post(self, request, token: str):
        given = FlagIn(data=request.data)
        given.is_valid(raise_exception=True)
        result = case_flag(
            token=token,
            reader=request.user,
            skip=self.skip,
            client_ip=client_ip(request),
            **given.validated_data,
        )
        if self.skip:
            page = next_page(task=result.task, reader=request.user)
        else:
            page = task_page(result.task)
        flag = result.flag
        body = {
            "reason": flag.reason,
            "comment": flag.comment,
            "skipped": flag.skipped,
            "flagged_at": flag.created_at,
            "replayed": result.replayed,
            "page_url": page_url(page, request),
        }
        return Response(
            body, status=status.HTTP_200_OK if result.replayed else status.HTTP_201_CREATED
        )


class SkipView(FlagView):
    """Skip a case you hold, with the reason (flagged for an admin): it goes to another reader
    and never comes back to you in this stage; page_url is your next case."""

    skip = True
