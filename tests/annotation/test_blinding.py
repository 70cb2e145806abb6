"""Blinding: nothing an MD receives tells which candidate is manual or which network made it."""

from __future__ import annotations

import base64
import io
import json
import re
import uuid
from dataclasses import dataclass

import numpy as np
import pytest
from django.db import connection
from django.urls import reverse
from PIL import Image, PngImagePlugin
from rest_framework.test import APIClient

from annotation import blinding
from annotation.api.serializers_review import REVIEW_FIELDS
from annotation.models import Candidate, Decision, Mask, ModelVersion, Radiograph, ReviewTask, Stage
from annotation.roles import MD
from annotation.services.assignment import review_tasks_create, task_lease_next
from annotation.services.consensus_masks import combined_candidates_offer
from annotation.storage import blob_read
from cxrio import masks as maskio
from tests.annotation.test_api_review_blinding import walk
from tests.factories import PASSWORD, UserFactory, review_stage

pytestmark = pytest.mark.django_db

CHUNKS = [b"IHDR", b"PLTE", b"tRNS", b"IDAT", b"IEND"]
# A mask a review page carries itself.
INLINE_PNG = re.compile(r"data:image/png;base64,([A-Za-z0-9+/=]*)")


def split_inline_pngs(text: str) -> tuple[str, list[bytes]]:
    """A page's text without the PNGs it carries as data: URIs (their letters are not words),
    and those PNGs' bytes."""
    found = [base64.b64decode(data) for data in INLINE_PNG.findall(text)]
    return INLINE_PNG.sub("data:image/png;base64,", text), found


def assert_blinded_overlay(body: bytes, secrets_: set[str], where: str) -> None:
    """A mask as a reader receives it: the one overlay encoding (chunks, palette), bytes a pure
    function of the pixels, no identifier inside."""
    chunks = blinding.png_chunks(body)
    assert [k for k, _ in chunks] == CHUNKS, where
    assert chunks[1][1] == bytes(blinding.OVERLAY_PALETTE), where
    pixels = np.asarray(Image.open(io.BytesIO(body))) != 0
    assert blinding.overlay_png(pixels) == body, where
    for secret in secrets_:
        assert secret.encode() not in body, f"{where} carries {secret!r}"


def disc(h=48, w=64, r=10):
    yy, xx = np.mgrid[0:h, 0:w]
    return (xx - 30) ** 2 + (yy - 20) ** 2 <= r * r


def test_the_same_pixels_give_the_same_overlay_bytes_however_the_mask_was_stored():
    pixels = disc()
    # One way: the 1-bit PNG the app writes. Other way: an 8-bit 0/255 file with text and time chunks.
    info = PngImagePlugin.PngInfo()
    info.add_text("Source", "manual tracing, reader 7")
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8) * 255).save(buffer, "PNG", pnginfo=info)
    from_import = maskio.mask_from_png(buffer.getvalue())
    from_app = maskio.mask_from_png(maskio.mask_to_png(pixels))
    assert blinding.overlay_png(from_import) == blinding.overlay_png(from_app)
    assert blinding.overlay_png(pixels.astype(np.uint8) * 255) == blinding.overlay_png(pixels)


def test_an_overlay_is_a_one_bit_palette_png_with_a_fixed_palette_and_no_metadata():
    data = blinding.overlay_png(disc())
    chunks = blinding.png_chunks(data)
    assert [kind for kind, _ in chunks] == CHUNKS
    ihdr = chunks[0][1]
    assert ihdr[8:10] == bytes([1, 3])  # bit depth 1, palette
    assert chunks[1][1] == bytes(blinding.OVERLAY_PALETTE)
    assert chunks[2][1] == b"\x00"  # background fully transparent
    image = Image.open(io.BytesIO(data))
    assert (np.asarray(image) == disc()).all()


def test_the_display_image_loses_every_ancillary_chunk():
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "patient Jane Doe")
    buffer = io.BytesIO()
    Image.fromarray(np.arange(64 * 48, dtype=np.uint16).reshape(48, 64).astype(np.uint8)).save(
        buffer, "PNG", pnginfo=info, dpi=(300, 300)
    )
    stripped = blinding.strip_png(buffer.getvalue())
    assert [k for k, _ in blinding.png_chunks(stripped)] == [b"IHDR", b"IDAT", b"IEND"]
    original = np.asarray(Image.open(io.BytesIO(buffer.getvalue())))
    assert (np.asarray(Image.open(io.BytesIO(stripped))) == original).all()


def test_the_same_candidate_has_unrelated_names_in_two_readers_tasks():
    stage = review_stage(n_cases=1, readers_per_case=2)
    first, second = ReviewTask.objects.filter(stage=stage).order_by("slot")
    a, b = blinding.option_tokens(first), blinding.option_tokens(second)
    assert set(a) == set(b)
    for candidate_id in a:
        assert a[candidate_id] != b[candidate_id]
        assert a[candidate_id].split(".")[1] != b[candidate_id].split(".")[1]
        task_token, signature = blinding.split_token(a[candidate_id])
        assert blinding.resolve_option(first, signature) == candidate_id
        assert blinding.resolve_option(second, signature) is None


# --- the crawl: everything an MD's browser receives for a whole stage ------------------------

FORBIDDEN_WORDS = re.compile(
    r"\b(manual(ly)?|networks?|models?|arch(itecture)?|encoders?|unet|unetpp|fpn|densenet121|"
    r"inceptionv3|resnet50|predict(ed|ion)?|ground.?truth|kind|staple|ensemble|consensus)\b",
    re.IGNORECASE,
)


@dataclass
class Received:
    url: str
    status: int
    headers: dict
    body: bytes


def bump_ids(start: int) -> None:
    """Make row ids distinctive (7 digits) so that a leaked id would be found by the crawl."""
    with connection.cursor() as cursor:
        for model in (Radiograph, Mask, ModelVersion, Candidate, Decision):
            table = model._meta.db_table
            if connection.vendor == "postgresql":
                cursor.execute(
                    "SELECT setval(pg_get_serial_sequence(%s, 'id'), %s)", [table, start]
                )
            else:
                cursor.execute("DELETE FROM sqlite_sequence WHERE name = %s", [table])
                cursor.execute(
                    "INSERT INTO sqlite_sequence (name, seq) VALUES (%s, %s)", [table, start]
                )


def crawl_stage(client, stage: Stage, received: list[Received]) -> None:
    def get(url, **kw):
        response = client.get(url, **kw)
        received.append(
            Received(url, response.status_code, dict(response.items()), response.content)
        )
        return response

    def post(url, data, **kw):
        """What review.js sends: the review API, JSON (or multipart), the browser's session."""
        if kw.pop("multipart", False):
            response = client.post(url, data, **kw)
        else:
            response = client.post(url, data, content_type="application/json", **kw)
        received.append(
            Received(url, response.status_code, dict(response.items()), response.content)
        )
        return response

    def api(name: str, **kwargs) -> str:
        return reverse(f"api:review-{name}", kwargs=kwargs)

    get(reverse("review_queue"))
    get(reverse("review_queue"), HTTP_HX_REQUEST="true")
    drew = False
    for _ in range(50):
        start = get(reverse("review_next", kwargs={"stage_id": stage.pk}))
        if start.status_code != 302:
            break
        page = get(start.url)
        while page.status_code == 200:
            html = page.content.decode()
            for url in re.findall(r'(?:href|src|data-[a-z-]+-url)="(/review/[^"]+\.png)"', html):
                get(url)
            key = re.search(r'name="idempotency_key" value="([^"]+)"', html).group(1)
            token = page.request["PATH_INFO"].rstrip("/").split("/")[-1]
            post(api("keep", token=token), {})
            post(api("ahead", token=token), {})
            if 'data-review-screen="pairwise"' in html:
                # The round form's (the bar's round undo form comes first).
                number = int(re.findall(r'name="number" value="(\d+)"', html)[-1])
                answer = post(
                    api("round", token=token),
                    {"number": number, "choice": "B", "idempotency_key": key},
                )
                post(
                    api("round", token=token),
                    {"number": number, "choice": "A", "idempotency_key": str(uuid.uuid4())},
                )
            elif not drew:
                drew = True
                draw = get(reverse("review_draw", kwargs={"token": token}) + "?from=1")
                for url in re.findall(
                    r'(?:src|data-[a-z-]+-url)="(/review/[^"]+\.png)"', draw.content.decode()
                ):
                    get(url)
                draft_url = api("draft", token=token)
                get(draft_url)
                pixels = disc()
                buffer = io.BytesIO()
                Image.fromarray(pixels.astype(np.uint8) * 255).save(buffer, "PNG")
                client.put(draft_url, buffer.getvalue(), content_type="image/png")
                get(draft_url)
                answer = post(
                    api("drawing", token=token),
                    {"idempotency_key": key, "mask": io.BytesIO(buffer.getvalue())},
                    multipart=True,
                )
            else:
                answer = post(api("pick", token=token), {"position": 1, "idempotency_key": key})
                post(
                    api("pick", token=token),
                    {"position": 2, "idempotency_key": str(uuid.uuid4())},
                )
            if answer.json()["decision"] is not None:  # decided: on to the next case
                break
            page = get(answer.json()["page_url"])
            if page.status_code == 302:
                page = get(page.url)
    # What "Undo last decision" shows (and a decided case, read-only) names masks the same way.
    for html in (
        get(reverse("review_undo", kwargs={"stage_id": stage.pk})).content.decode(),
        get(reverse("review_task", kwargs={"token": token})).content.decode(),
    ):
        assert "Case " in html
        for url in re.findall(r'src="(/review/[^"]+\.png)"', html):
            get(url)
    undo = post(api("undo", stage_id=stage.pk), {})
    get(undo.json()["page_url"])


def said(r: Received) -> str:
    """The words of an answer: for the review API's JSON, its values (its keys are the API's
    own field names, all listed in REVIEW_FIELDS)."""
    if not r.headers.get("Content-Type", "").startswith("application/json"):
        return r.body.decode()
    values = []
    for kind, name, value in walk(json.loads(r.body)):
        if kind == "key":
            assert name in REVIEW_FIELDS, (r.url, name)
        else:
            values.append(str(value))
    return " ".join(values)


def with_combined_candidates(stage: Stage) -> Stage:
    """The stage's cases also offered the STAPLE and ensemble combinations of its networks."""
    ReviewTask.objects.filter(stage=stage).delete()
    stage.config = {**stage.config, "staple": True, "ensemble": True}
    stage.save(update_fields=["config"])
    cases = sorted(set(stage.candidates.values_list("radiograph_id", flat=True)))
    assert combined_candidates_offer(stage=stage, radiograph_ids=cases) == 2 * len(cases)
    review_tasks_create(stage=stage)
    return stage


@pytest.mark.parametrize(
    ("mode", "combined"),
    [(Stage.Mode.NWAY, False), (Stage.Mode.PAIRWISE, False), (Stage.Mode.NWAY, True)],
)
def test_nothing_an_md_receives_for_a_whole_stage_reveals_a_candidates_source(
    client, mode, combined
):
    bump_ids(7340000)
    stage = review_stage(
        n_cases=3,
        mode=mode,
        n_networks=3 if mode == Stage.Mode.PAIRWISE or combined else 5,
        readers_per_case=2,
    )
    if combined:
        stage = with_combined_candidates(stage)
    # The manual masks arrive as imported files would: 8-bit, with a text chunk naming them.
    for mask in Mask.objects.filter(kind="manual", radiograph__candidates__stage=stage).distinct():
        info = PngImagePlugin.PngInfo()
        info.add_text("Title", f"manual {mask.source_name}")
        buffer = io.BytesIO()
        pixels = maskio.mask_from_png(blob_read(mask.png.name))
        Image.fromarray(pixels.astype(np.uint8) * 255).save(buffer, "PNG", pnginfo=info)
        from django.core.files.storage import default_storage

        default_storage.delete(mask.png.name)
        default_storage.save(mask.png.name, io.BytesIO(buffer.getvalue()))
    secrets_ = {
        str(pk)
        for model in (Mask, ModelVersion, Candidate, Radiograph)
        for pk in model.objects.values_list("pk", flat=True)
    }
    secrets_ |= set(Mask.objects.exclude(source_name="").values_list("source_name", flat=True))
    secrets_ |= set(Radiograph.objects.values_list("name", flat=True))
    secrets_ |= set(Candidate.objects.values_list("token", flat=True))
    secrets_ |= {m.pixel_sha256 for m in Mask.objects.all()} | {
        m.png.name for m in Mask.objects.all()
    }
    assert all(len(s) >= 7 for s in secrets_), (
        "ids must be distinctive for this test to mean anything"
    )

    received: list[Received] = []
    tokens_by_reader = []
    for _reader in range(2):
        user = UserFactory(roles=[MD])
        client.login(username=user.username, password=PASSWORD)
        before = len(received)
        crawl_stage(client, stage, received)
        tokens_by_reader.append(
            {r.url for r in received[before:] if r.url.startswith("/review/m/")}
        )
        client.logout()
    assert len(received) > 40

    masks, texts, carried = [], [], []
    for r in received:
        if r.headers.get("Content-Type") == "image/png":
            if r.url.startswith("/review/m/"):
                masks.append(r)
        else:
            texts.append(r)
    assert masks and texts
    for r in received:
        text = r.url + " " + " ".join(f"{k}: {v}" for k, v in r.headers.items())
        if r in texts:
            words, pngs = split_inline_pngs(said(r))
            text += " " + words
            carried += [(r.url, png) for png in pngs]
        found = FORBIDDEN_WORDS.search(text)
        assert not found, (
            f"{r.url} says {found.group(0)!r}: …{text[max(0, found.start() - 80) : found.end() + 80]}…"
        )
        for secret in secrets_:
            assert secret not in text, f"{r.url} contains {secret!r}"
    # The masks the screens carry: the overlay encoding, as served.
    assert carried, "the review screens carry their masks"
    for url, png in carried:
        assert_blinded_overlay(png, secrets_, f"a mask carried by {url}")
    # Every mask image: the same chunks, palette and headers; bytes a pure function of the pixels.
    # The ETag differs per URL (it is the URL's own) but has one form for every source.
    header_sets, etags = set(), set()
    for r in masks:
        assert_blinded_overlay(r.body, secrets_, r.url)
        header_sets.add(
            tuple(
                sorted((k, v) for k, v in r.headers.items() if k not in ("Content-Length", "ETag"))
            )
        )
        assert re.fullmatch(r'"[A-Za-z0-9_-]{24}"', r.headers["ETag"]), r.headers["ETag"]
        etags.add((r.url, r.headers["ETag"]))
    assert len(header_sets) == 1, header_sets
    # One ETag per URL, never shared between two URLs (two tasks showing the same pixels).
    assert len({etag for _, etag in etags}) == len({url for url, _ in etags})
    # Two readers of the same cases never receive the same mask URL.
    assert tokens_by_reader[0] and not tokens_by_reader[0] & tokens_by_reader[1]


# --- caching: ETag and 304 -------------------------------------------------------------------


def screen_images(client, stage) -> list[str]:
    """The image URLs of the reader's next case: its radiograph, as its page names it, and its
    masks' as the review API names them (the page itself carries small masks)."""
    start = client.get(reverse("review_next", kwargs={"stage_id": stage.pk}))
    html = client.get(start.url).content.decode()
    token = start.url.rstrip("/").split("/")[-1]
    panes = client.get(reverse("api:review-task", kwargs={"token": token})).json()["panes"]
    return re.findall(r'data-image-url="([^"]+)"', html) + [pane["mask_url"] for pane in panes]


def test_a_browser_revalidates_an_image_with_its_etag_and_gets_304_with_the_same_headers(client):
    stage = review_stage(n_cases=1)
    user = UserFactory(roles=[MD])
    client.login(username=user.username, password=PASSWORD)
    urls = screen_images(client, stage)
    assert len(urls) == 6  # the radiograph and five masks
    for url in urls:
        first = client.get(url)
        assert first.status_code == 200 and first.content
        etag = first["ETag"]
        again = client.get(url, HTTP_IF_NONE_MATCH=etag)
        assert again.status_code == 304 and again.content == b""
        assert again["ETag"] == etag
        assert (
            again["Cache-Control"]
            == first["Cache-Control"]
            == blinding.IMAGE_HEADERS["Cache-Control"]
        )
        assert "max-age=3600" in again["Cache-Control"] and "private" in again["Cache-Control"]
        # Another validator (or none) gets the image again.
        stale = client.get(url, HTTP_IF_NONE_MATCH='"not-this-one"')
        assert stale.status_code == 200 and stale.content == first.content
    # The access check comes first: another reader holding the ETag still gets 404.
    client.logout()
    other = UserFactory(roles=[MD])
    client.login(username=other.username, password=PASSWORD)
    for url in urls:
        assert client.get(url, HTTP_IF_NONE_MATCH=first["ETag"]).status_code == 404


def test_two_readers_of_the_same_case_get_unrelated_etags_for_the_same_pixels(client):
    stage = review_stage(n_cases=1, readers_per_case=2)
    answers = []
    for _ in range(2):
        user = UserFactory(roles=[MD])
        client.login(username=user.username, password=PASSWORD)
        answers.append(
            {
                client.get(url)["ETag"]: client.get(url).content
                for url in screen_images(client, stage)
            }
        )
        client.logout()
    first, second = answers
    # The same six images (as bytes) reached both readers, under six different ETags each.
    assert sorted(first.values()) == sorted(second.values())
    assert len(first) == len(second) == 6 and not set(first) & set(second)


def test_normalised_manual_and_network_candidates_get_the_one_overlay_encoding():
    stage = review_stage(n_cases=2, n_networks=2)
    candidates = list(Candidate.objects.filter(stage=stage).select_related("radiograph", "mask"))
    assert candidates and all(c.mask.normalised_from_id for c in candidates)
    kinds = {c.mask.kind for c in candidates}
    assert kinds == {Mask.Kind.MANUAL, Mask.Kind.NETWORK}
    for candidate in candidates:
        data = blinding.mask_overlay(candidate.mask, radiograph=candidate.radiograph)
        assert data == blinding.overlay_png(
            maskio.mask_from_png(blob_read(candidate.mask.png.name))
        )
        assert [k for k, _ in blinding.png_chunks(data)] == [
            b"IHDR",
            b"PLTE",
            b"tRNS",
            b"IDAT",
            b"IEND",
        ]
    # Served the same way: the same headers for a manual and a network overlay.
    md = UserFactory(roles=[MD])
    client = APIClient()
    client.login(username=md.username, password=PASSWORD)
    task = task_lease_next(stage=stage, reader=md)
    screen = client.get(f"/api/review/tasks/{task.token}/").json()
    answers = [client.get(pane["mask_url"]) for pane in screen["panes"]]
    shown = {
        Candidate.objects.get(pk=pk).mask.kind
        for pk in (
            blinding.resolve_option(task, pane["mask_url"].rsplit(".", 2)[-2])
            for pane in screen["panes"]
        )
    }
    assert shown == {Mask.Kind.MANUAL, Mask.Kind.NETWORK}
    headers = {
        tuple(sorted((k, v) for k, v in a.headers.items() if k not in ("Content-Length", "ETag")))
        for a in answers
    }
    assert len(headers) == 1
