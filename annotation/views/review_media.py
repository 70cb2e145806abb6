"""Images of the review screens, each behind the reader's own task.

A URL of someone else's task answers 404, exactly like a URL that never existed, so URLs
cannot be probed. Every image response carries the same headers: private caching, no ETag or
Last-Modified derived from files, no file names.
"""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from annotation import blinding
from annotation.selectors.review import (
    media_consensus_png,
    media_image_png,
    media_overlay_png,
)
from annotation.views.access import role_required
from annotation.views.review import READER_ROLES


def png_response(data: bytes) -> HttpResponse:
    """A review image as every reader receives it (the review API's images too)."""
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
    return png_response(data)


@require_GET
@role_required(*READER_ROLES)
def image_png(request: HttpRequest, token: str) -> HttpResponse:
    data = media_image_png(token=token, reader=request.user)
    if data is None:
        raise Http404("no such image")
    return png_response(data)


@require_GET
@role_required(*READER_ROLES)
def consensus_png(request: HttpRequest, token: str) -> HttpResponse:
    """An adjudication's STAPLE consensus of the readers' masks (its senior MD's start)."""
    data = media_consensus_png(token=token, reader=request.user)
    if data is None:
        raise Http404("no such image")
    return png_response(data)
