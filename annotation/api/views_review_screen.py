"""What the review screens' JavaScript asks of the review API besides decisions: keeping the
case while the reader works on it, leasing the next case ahead (so its page can be
prerendered), and the drawing in progress (cm-draft.js). Same access rules as the rest of
the review API: a case not yours answers 404.
"""

from __future__ import annotations

from django.http import HttpResponse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.parsers import BaseParser
from rest_framework.response import Response

from annotation.api.permissions import IsMD
from annotation.api.schema import ErrorDetail
from annotation.api.serializers_review import AheadOut, KeepOut, page_url
from annotation.api.views_review import CONFLICT, NOT_YOURS, ReviewView, held
from annotation.lookups import unique_or_none
from annotation.middleware import body_limit
from annotation.models import DrawingDraft, ReviewTask
from annotation.selectors.review import inline_overlays, screen_page, task_screen
from annotation.services.assignment import task_lease_keep, task_lease_next
from annotation.services.decisions import DRAWING_MAX_BYTES
from annotation.services.drafts import draft_delete, draft_save
from annotation.services.review_errors import ReviewError


class KeepView(ReviewView):
    """Keep the case while you are still at its screen: the lease otherwise runs from the time
    the screen was opened. 409 (or 404) once the case is no longer yours to decide."""

    @extend_schema(request=None, responses={200: KeepOut, 404: NOT_YOURS, 409: CONFLICT})
    def post(self, request, token: str):
        task = held(request, token)
        until = task_lease_keep(task=task, reader=request.user)
        return Response({"lease_expires_at": until, "lease_seconds": task.stage.lease_seconds})


class AheadView(ReviewView):
    """Lease your next case ahead, while you look at this one, so the browser can prerender its
    page; asking again holds no third case."""

    permission_classes = [IsMD]

    @extend_schema(request=None, responses={200: AheadOut, 404: NOT_YOURS})
    def post(self, request, token: str):
        task = held(request, token)
        nothing = Response({"page_url": None, "prefetch": []})
        if task.kind != ReviewTask.Kind.REVIEW or not task.stage.config.get("prefetch", True):
            return nothing
        try:
            nxt = task_lease_next(stage=task.stage, reader=request.user, skip=task.pk)
        except ReviewError:  # the stage closed meanwhile: nothing to look ahead to
            nxt = None
        if nxt is None:
            return nothing
        screen = task_screen(task=nxt, reader=request.user, progress=False)
        # The masks come with the page when it carries them (as the page itself will decide).
        inline = inline_overlays(screen)
        urls = [screen.image_url, *([] if inline else [pane.mask_url for pane in screen.panes])]
        return Response(
            {
                "page_url": page_url(screen_page(screen), request),
                "prefetch": [page_url(url, request) for url in urls],
            }
        )


class PNGParser(BaseParser):
    """A request body that is one PNG image: the bytes as sent."""

    media_type = "image/png"

    def parse(self, stream, media_type=None, parser_context=None) -> bytes:
        return stream.read() if stream is not None else b""


def _stamp(draft: DrawingDraft) -> str:
    return draft.updated_at.isoformat().replace("+00:00", "Z")


def _client_time(value: str):
    """The browser's ISO time of the drawing, or None when absent or unreadable."""
    try:
        parsed = parse_datetime(value.strip())
    except ValueError:
        return None
    if parsed is None or timezone.is_naive(parsed):
        return None
    return parsed


DRAFT_STAMP = "when the browser made the drawing (ISO time)"


@body_limit(DRAWING_MAX_BYTES)
class DraftView(ReviewView):
    """The drawing in progress on a case you hold, kept server-side (one per case and reader):
    GET it, PUT a newer one (image/png, X-Draft-Updated: when it was drawn), DELETE it."""

    parser_classes = [PNGParser]

    @extend_schema(
        responses={
            (200, "image/png"): OpenApiResponse(
                response=OpenApiTypes.BINARY,
                description=f"the draft; X-Draft-Updated: {DRAFT_STAMP}",
            ),
            204: OpenApiResponse(description="no draft"),
            404: NOT_YOURS,
        }
    )
    def get(self, request, token: str):
        task = held(request, token)
        stored = unique_or_none(DrawingDraft.objects.filter(task=task, reader=request.user))
        if stored is None:
            return HttpResponse(status=204)
        response = HttpResponse(bytes(stored.png), content_type="image/png")
        response["X-Draft-Updated"] = _stamp(stored)
        response["Cache-Control"] = "no-store"
        return response

    @extend_schema(
        request={"image/png": OpenApiTypes.BINARY},
        responses={
            204: OpenApiResponse(
                description=f"kept (or a newer one was); X-Draft-Updated: {DRAFT_STAMP}"
            ),
            404: NOT_YOURS,
            409: CONFLICT,
            415: OpenApiResponse(response=ErrorDetail, description="a draft is sent as image/png"),
        },
    )
    def put(self, request, token: str):
        task = held(request, token)
        stored = draft_save(
            task=task,
            reader=request.user,
            png=request.data,
            updated_at=_client_time(request.headers.get("X-Draft-Updated", "")),
        )
        response = HttpResponse(status=204)
        response["X-Draft-Updated"] = _stamp(stored)
        return response

    @extend_schema(responses={204: OpenApiResponse(description="dropped"), 404: NOT_YOURS})
    def delete(self, request, token: str):
        draft_delete(task=held(request, token), reader=request.user)
        return HttpResponse(status=204)
