"""Images and drafts of the review screens, each behind the reader's own task.

A URL of someone else's task answers 404, exactly like a URL that never existed, so URLs
cannot be probed. Every image response carries the same headers: private caching, no ETag or
Last-Modified derived from files, no file names.
"""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_GET, require_http_methods

from annotation import blinding
from annotation.models import DrawingDraft, ReviewTask
from annotation.selectors.review import media_image_png, media_overlay_png, media_task
from annotation.services.drafts import draft_delete, draft_save
from annotation.services.review_errors import ReviewError
from annotation.views.access import role_required
from annotation.views.review import READER_ROLES


def _task_of(request: HttpRequest, token: str) -> ReviewTask:
    task = media_task(token=token, reader=request.user)
    if task is None:
        raise Http404("no such image")
    return task


def _png(data: bytes) -> HttpResponse:
    response = HttpResponse(data, content_type="image/png")
    for name, value in blinding.IMAGE_HEADERS.items():
        response[name] = value
    return response


@require_GET
@role_required(*READER_ROLES)
def mask_png(request: HttpRequest, opaque: str) -> HttpResponse:
    data = media_overlay_png(opaque=opaque, reader=request.user)
    if data is None:
        raise Http404("no such image")
    return _png(data)


@require_GET
@role_required(*READER_ROLES)
def image_png(request: HttpRequest, token: str) -> HttpResponse:
    data = media_image_png(token=token, reader=request.user)
    if data is None:
        raise Http404("no such image")
    return _png(data)


def _client_time(value: str):
    """The browser's ISO time of the drawing, or None when absent or unreadable."""
    try:
        parsed = parse_datetime(value.strip())
    except ValueError:
        return None
    if parsed is None or timezone.is_naive(parsed):
        return None
    return parsed


def _stamp(draft: DrawingDraft) -> str:
    return draft.updated_at.isoformat().replace("+00:00", "Z")


@require_http_methods(["GET", "PUT", "DELETE"])
@role_required(*READER_ROLES)
def draft(request: HttpRequest, token: str) -> HttpResponse:
    """GET: 200 PNG + X-Draft-Updated, or 204. PUT: PNG body. DELETE: drop it. Owner only."""
    task = _task_of(request, token)
    if request.method == "GET":
        stored = DrawingDraft.objects.filter(task=task, reader=request.user).first()
        if stored is None:
            return HttpResponse(status=204)
        response = HttpResponse(bytes(stored.png), content_type="image/png")
        response["X-Draft-Updated"] = _stamp(stored)
        response["Cache-Control"] = "no-store"
        return response
    if request.method == "DELETE":
        draft_delete(task=task, reader=request.user)
        return HttpResponse(status=204)
    if request.content_type != "image/png":
        return HttpResponse("a draft is sent as image/png", status=415, content_type="text/plain")
    try:
        stored = draft_save(
            task=task,
            reader=request.user,
            png=request.body,
            updated_at=_client_time(request.headers.get("X-Draft-Updated", "")),
        )
    except ReviewError as exc:
        status = 409 if task.status != ReviewTask.Status.LEASED else exc.status
        return HttpResponse(str(exc), status=status, content_type="text/plain")
    response = HttpResponse(status=204)
    response["X-Draft-Updated"] = _stamp(stored)
    return response
