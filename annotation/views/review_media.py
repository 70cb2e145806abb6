"""Images of the review screens, each behind the reader's own task.

A URL of someone else's task answers 404, exactly like a URL that never existed, so URLs
cannot be probed. Every image response carries the same headers: private caching for an hour,
an ETag of the same form for every image (annotation.blinding.image_etag: never derived from
files, unrelated across tasks), no Last-Modified, no file names. A browser revalidating with
If-None-Match gets 304 after the same access check, without a file being read.
"""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse
from django.utils.http import parse_etags
from django.views.decorators.http import require_GET

from annotation import blinding
from annotation.selectors.review import (
    MediaImage,
    media_consensus_png,
    media_image,
    media_overlay,
)
from annotation.views.access import role_required
from annotation.views.review import READER_ROLES


def png_response(data: bytes, *, etag: str | None = None, status: int = 200) -> HttpResponse:
    """A review image as every reader receives it (the review API's images too)."""
    response = HttpResponse(data, content_type="image/png", status=status)
    for name, value in blinding.IMAGE_HEADERS.items():
        response[name] = value
    if etag is not None:
        response["ETag"] = etag
    return response


def media_response(request: HttpRequest, image: MediaImage | None) -> HttpResponse | None:
    """The image, or 304 when the browser already holds it; None when there is no such image
    for this reader (the caller answers 404 in its own way)."""
    if image is None:
        return None
    known = parse_etags(request.headers.get("If-None-Match", ""))
    if image.etag in known or "*" in known:
        response = png_response(b"", etag=image.etag, status=304)
        del response["Content-Type"]
        return response
    return png_response(image.read(), etag=image.etag)


@require_GET
@role_required(*READER_ROLES)
def mask_png(request: HttpRequest, opaque: str) -> HttpResponse:
    response = media_response(request, media_overlay(opaque=opaque, reader=request.user))
    if response is None:
        raise Http404("no such image")
    return response


@require_GET
@role_required(*READER_ROLES)
def image_png(request: HttpRequest, token: str) -> HttpResponse:
    response = media_response(request, media_image(token=token, reader=request.user))
    if response is None:
        raise Http404("no such image")
    return response


@require_GET
@role_required(*READER_ROLES)
def consensus_png(request: HttpRequest, token: str) -> HttpResponse:
    """An adjudication's STAPLE consensus of the readers' masks (its senior MD's start)."""
    data = media_consensus_png(token=token, reader=request.user)
    if data is None:
        raise Http404("no such image")
    return png_response(data)
