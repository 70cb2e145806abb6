"""What a reader's browser receives about candidates, and nothing more.

Every overlay an MD sees (manual, network, drawn, refined: they cannot be told apart) goes
through overlay_png(): decode the stored mask, resize to the case's working resolution with
nearest neighbour, encode as a 1-bit palette PNG with one fixed palette, transparency of the
background, fixed compression and no ancillary chunks. The same pixels therefore give the same
bytes whatever file or process the mask came from.

URLs name candidates by an opaque per-task token: HMAC(secret, task token, candidate). The same
candidate in two readers' tasks gets unrelated URLs, so readers (or logs) cannot correlate
candidates across tasks, and a task handed to a new reader gets a new task token and new URLs.
The radiograph is served by task token too, stripped to its critical PNG chunks.

What an image URL serves never changes, so browsers may keep it (IMAGE_HEADERS) and revalidate
with an ETag. The ETag is an HMAC of the URL's token and the content's identity: the same form
and length for every image, unrelated between two tasks (or two readers) showing the same
pixels, and computed from the database row alone, so a revalidation (304) reads no file.
"""

from __future__ import annotations

import base64
import hmac
import io
import struct
import zlib

import numpy as np
from django.core.cache import cache
from django.core.files.storage import default_storage
from django.utils.crypto import salted_hmac
from PIL import Image

from annotation.models import Mask, Radiograph, ReviewTask
from annotation.storage import blob_read, blob_write, content_path
from cxrio import masks as maskio

# Changing anything that alters overlay bytes bumps this, so no cache serves old bytes.
PIPELINE_VERSION = 1
# Okabe–Ito orange, the viewer's fill colour; the background palette entry is fully transparent.
OVERLAY_PALETTE = (0, 0, 0, 230, 159, 0)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CRITICAL_CHUNKS = {b"IHDR", b"PLTE", b"IDAT", b"IEND"}
# Headers of every image a reader receives: private (the reader's browser only), kept an hour
# (a task's result URL shows another mask after an undo and a new decision), then revalidated
# with image_etag()'s ETag: the only validator, never one derived from files (no Last-Modified).
IMAGE_HEADERS = {
    "Cache-Control": "private, max-age=3600, immutable",
    "X-Content-Type-Options": "nosniff",
}


def overlay_png(pixels: np.ndarray) -> bytes:
    """The one encoding of a mask overlay: 1-bit palette PNG, index 1 = infection."""
    pixels = np.asarray(pixels)
    if pixels.ndim != 2:
        raise ValueError(f"a mask is 2-D, got shape {pixels.shape}")
    height, width = pixels.shape
    indices = (pixels != 0).astype(np.uint8)
    image = Image.frombytes("P", (width, height), indices.tobytes())
    image.putpalette(OVERLAY_PALETTE, rawmode="RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", bits=1, transparency=0, optimize=False, compress_level=9)
    return buffer.getvalue()


def mask_pixels(mask: Mask, *, width: int, height: int) -> np.ndarray:
    """The stored mask decoded and brought to (width, height) with nearest neighbour."""
    pixels = maskio.mask_from_png(blob_read(mask.png.name))
    if pixels.shape != (height, width):
        pixels = maskio.resize_nearest(pixels, width=width, height=height)
    return pixels


def overlay_identity(mask: Mask, *, radiograph: Radiograph) -> str:
    """What an overlay's bytes depend on: the pixels, the working size and the pipeline."""
    size = f"{radiograph.work_width}x{radiograph.work_height}"
    return f"overlay:{PIPELINE_VERSION}:{mask.pixel_sha256}:{size}"


def display_identity(radiograph: Radiograph) -> str:
    """What a radiograph's served bytes depend on: its content-addressed display file."""
    return f"display:{radiograph.display.name}"


def image_etag(url_token: str, identity: str) -> str:
    """The ETag of the image `url_token` (a task token or an opaque option token) serves."""
    digest = salted_hmac("collabmask.blinding.etag", f"{url_token}|{identity}", algorithm="sha256")
    return '"' + base64.urlsafe_b64encode(digest.digest()[:18]).decode() + '"'


def mask_overlay(mask: Mask, *, radiograph: Radiograph) -> bytes:
    """Overlay bytes of a stored mask at the case's working resolution.

    Rendered once and kept as a blob named by the pixels (shared by every web process), so
    serving any overlay is the same blob read, whichever mask and however it was stored:
    response times cannot tell sources apart."""
    width, height = radiograph.work_width, radiograph.work_height
    key = f"cm:overlay:{PIPELINE_VERSION}:{mask.pixel_sha256}:{width}x{height}"
    data = cache.get(key)
    if data is None:
        path = content_path(
            "overlays", mask.pixel_sha256, f"{width}x{height}.v{PIPELINE_VERSION}.png"
        )
        if default_storage.exists(path):
            data = blob_read(path)
        else:
            data = overlay_png(mask_pixels(mask, width=width, height=height))
            blob_write(path, data)
        cache.set(key, data, timeout=24 * 3600)
    return data


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, payload) of every chunk of a PNG; ValueError if it is not one."""
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG")
    chunks, offset = [], len(PNG_SIGNATURE)
    while offset + 12 <= len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        chunks.append((kind, data[offset + 8 : offset + 8 + length]))
        offset += 12 + length
        if kind == b"IEND":
            break
    return chunks


def strip_png(data: bytes) -> bytes:
    """The PNG with only its critical chunks: no text, time, EXIF, ICC profile or physical size."""
    out = [PNG_SIGNATURE]
    for kind, payload in png_chunks(data):
        if kind in CRITICAL_CHUNKS:
            crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
            out.append(struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc))
    return b"".join(out)


def display_png(radiograph: Radiograph) -> bytes:
    """The full-resolution display image as a reader receives it."""
    data = blob_read(radiograph.display.name)
    try:
        return strip_png(data)
    except ValueError:
        # Not a PNG on disk (should not happen): re-encode rather than pass unknown bytes on.
        buffer = io.BytesIO()
        Image.open(io.BytesIO(data)).convert("L").save(buffer, format="PNG", compress_level=6)
        return buffer.getvalue()


# --- opaque names ------------------------------------------------------------------------


def _sign(task_token: str, ref: str) -> str:
    digest = salted_hmac("collabmask.blinding.option", f"{task_token}|{ref}", algorithm="sha256")
    return base64.urlsafe_b64encode(digest.digest()[:15]).decode()


def option_refs(task: ReviewTask) -> list[str]:
    """What a task shows, in its stored order: candidates for review, decisions for adjudication."""
    prefix = "d" if task.kind == ReviewTask.Kind.ADJUDICATION else "c"
    return [f"{prefix}{pk}" for pk in task.candidate_order]


def option_token(task: ReviewTask, ref: str) -> str:
    """The opaque name of one option of one task: '<task token>.<signature>'."""
    return f"{task.token}.{_sign(task.token, ref)}"


def option_tokens(task: ReviewTask) -> dict[int, str]:
    """Option id (candidate id, or decision id for adjudication) -> opaque token."""
    return {int(ref[1:]): option_token(task, ref) for ref in option_refs(task)}


# The reader's own decided mask of a task (a candidate they chose, or their drawing), as
# their list of decided cases shows it: one more option name of the task, like the others.
RESULT_REF = "r"


def result_token(task: ReviewTask) -> str:
    """The opaque name of the mask the task's reader decided on."""
    return option_token(task, RESULT_REF)


def is_result(task: ReviewTask, signature: str) -> bool:
    return hmac.compare_digest(_sign(task.token, RESULT_REF), signature)


def split_token(opaque: str) -> tuple[str, str]:
    task_token, _, signature = opaque.rpartition(".")
    return task_token, signature


def resolve_option(task: ReviewTask, signature: str) -> int | None:
    """The option id a signature names in this task, or None. Constant time per comparison."""
    found = None
    for ref in option_refs(task):
        if hmac.compare_digest(_sign(task.token, ref), signature):
            found = int(ref[1:])
    return found
