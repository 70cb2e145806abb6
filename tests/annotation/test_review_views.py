from __future__ import annotations

import base64
import io
import re
import uuid
from datetime import timedelta

import numpy as np
import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from PIL import Image

from annotation.models import Decision, DrawingDraft, GroundTruth, ReviewTask, Stage
from annotation.roles import MD, RESEARCHER, SENIOR_MD
from tests.factories import PASSWORD, UserFactory, review_stage

pytestmark = pytest.mark.django_db


def login(client, *roles):
    user = UserFactory(roles=list(roles))
    client.login(username=user.username, password=PASSWORD)
    return user


def png_of(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8) * 255).save(buffer, "PNG")
    return buffer.getvalue()


def open_next(client, stage) -> tuple[ReviewTask, str]:
    response = client.get(reverse("review_next", kwargs={"stage_id": stage.pk}))
    assert response.status_code == 302
    token = response.url.rstrip("/").split("/")[-1]
    page = client.get(response.url)
    assert page.status_code == 200
    return ReviewTask.objects.get(token=token), page.content.decode()


def form_key(html: str) -> str:
    return re.search(r'name="idempotency_key" value="([^"]+)"', html).group(1)


def pick_first(client, task, html: str):
    """The reader picks candidate 1 on the screen `html` of `task` (a plain form post)."""
    return client.post(
        reverse("review_pick", kwargs={"token": task.token}),
        {"position": 1, "idempotency_key": form_key(html)},
    )


def api(client, name: str, body: dict | None = None, **kwargs):
    """What review.js sends: a JSON post to the review API with the browser's session."""
    return client.post(
        reverse(f"api:review-{name}", kwargs=kwargs), body or {}, content_type="application/json"
    )


def test_the_queue_shows_done_and_remaining_per_stage(client):
    stage = review_stage(n_cases=3)
    login(client, MD)
    html = client.get(reverse("review_queue")).content.decode()
    assert f"Stage {stage.number}" in html and "<td>0</td><td>3</td>" in html
    task, page = open_next(client, stage)
    client.post(
        reverse("review_pick", kwargs={"token": task.token}),
        {"position": 2, "idempotency_key": form_key(page), "time_on_screen_ms": 10},
    )
    html = client.get(reverse("review_queue")).content.decode()
    assert "<td>1</td><td>2</td>" in html


def test_review_pages_are_refused_to_other_roles(client):
    stage = review_stage(n_cases=1)
    login(client, RESEARCHER)
    assert client.get(reverse("review_queue")).status_code == 403
    assert client.get(reverse("review_next", kwargs={"stage_id": stage.pk})).status_code == 403


def test_the_five_way_screen_shows_every_candidate_by_position(client):
    stage = review_stage(n_cases=1, n_networks=4)
    login(client, MD)
    task, html = open_next(client, stage)
    assert html.count("data-cm-pane data-position=") == 5
    assert "data-cm-focus" in html
    for position in range(1, 6):
        assert f'data-choice-keys="{position}"' in html
    assert 'data-choice-keys="r"' in html


def test_the_pairwise_screen_shows_a_and_b_of_the_current_round(client):
    stage = review_stage(n_cases=1, mode=Stage.Mode.PAIRWISE, n_networks=2)
    login(client, MD)
    task, html = open_next(client, stage)
    assert re.findall(r'data-label="([AB])"', html) == ["A", "B"]
    assert "round 1 of 2" in html
    assert f'data-api-url="/api/review/tasks/{task.token}/round/"' in html
    response = api(
        client,
        "round",
        {"number": 1, "choice": "B", "idempotency_key": form_key(html), "time_on_screen_ms": 300},
        token=task.token,
    )
    assert response.status_code == 201
    page = response.json()["page_url"]
    assert page == "http://testserver" + reverse("review_task", kwargs={"token": task.token})
    html = client.get(page).content.decode()
    assert "round 2 of 2" in html
    # Without JavaScript the same form posts to the page, which sends the reader on.
    plain = client.post(
        reverse("review_round", kwargs={"token": task.token}),
        {"number": 2, "choice": "neither", "idempotency_key": form_key(html)},
    )
    assert plain.status_code == 302
    assert plain.url == reverse("review_draw", kwargs={"token": task.token})


def test_a_pick_posted_twice_and_from_a_second_tab_makes_one_decision(client):
    stage = review_stage(n_cases=2)
    login(client, MD)
    task, html = open_next(client, stage)
    api(client, "ahead", token=task.token)  # as review.js does once the screen is in use
    body = {"position": 1, "idempotency_key": form_key(html)}
    first = api(client, "pick", body, token=task.token)
    retry = api(client, "pick", body, token=task.token)
    other_tab = api(
        client, "pick", {"position": 3, "idempotency_key": str(uuid.uuid4())}, token=task.token
    )
    assert (first.status_code, retry.status_code, other_tab.status_code) == (201, 200, 409)
    # Straight to the next case's screen (leased ahead while the reader looked at this one).
    nxt = ReviewTask.objects.exclude(pk=task.pk).get(reader=task.reader)
    page = "http://testserver" + reverse("review_task", kwargs={"token": nxt.token})
    assert first.json()["page_url"] == page
    assert retry.json()["page_url"] == first.json()["page_url"]
    # The second tab is told, and sent on to the same next case.
    assert "already decided" in other_tab.json()["detail"]
    assert other_tab.json()["page_url"] == page
    assert Decision.objects.get().position == 1


def test_a_bad_position_is_refused_with_a_message(client):
    stage = review_stage(n_cases=1)
    login(client, MD)
    task, html = open_next(client, stage)
    response = api(
        client, "pick", {"position": 9, "idempotency_key": form_key(html)}, token=task.token
    )
    # Well formed, but not a pane of this case: the screen stays, with the message.
    assert response.status_code == 409
    assert response.json() == {"detail": "position must be 1 to 5, not 9"}
    plain = client.post(
        reverse("review_pick", kwargs={"token": task.token}),
        {"position": "9", "idempotency_key": form_key(html)},
    )
    assert plain.status_code == 302 and plain.url == reverse(
        "review_task", kwargs={"token": task.token}
    )
    assert "position must be 1 to 5" in client.get(plain.url).content.decode()
    assert not Decision.objects.exists()


def test_images_are_served_only_to_the_reader_who_holds_the_task(client):
    stage = review_stage(n_cases=2)
    login(client, MD)
    task, _html = open_next(client, stage)
    urls = screen_images(client, task)
    assert len(urls) == 6
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200 and response["Content-Type"] == "image/png"
        assert response["Cache-Control"] == "private, max-age=3600, immutable"
        assert response.has_header("ETag") and not response.has_header("Last-Modified")
    client.logout()
    login(client, MD)
    assert all(client.get(url).status_code == 404 for url in urls)
    # A made-up signature on a real task is as unknown as a made-up task.
    assert client.get(urls[0].replace(".png", "x.png")).status_code == 404


def screen_images(client, task) -> list[str]:
    """The case's radiograph and mask URLs, as the review API names them."""
    screen = client.get(reverse("api:review-task", kwargs={"token": task.token})).json()
    return [screen["image_url"], *(pane["mask_url"] for pane in screen["panes"])]


def carried_masks(html: str) -> dict[str, bytes]:
    """The masks a review page carries itself, by pane label."""
    return {
        label: base64.b64decode(data)
        for label, data in re.findall(
            r'data-label="([^"]+)" data-mask-url="data:image/png;base64,([A-Za-z0-9+/=]+)"', html
        )
    }


def test_the_screen_carries_its_masks_and_needs_only_the_radiograph_besides(client, settings):
    stage = review_stage(n_cases=2)
    login(client, MD)
    task, html = open_next(client, stage)
    carried = carried_masks(html)
    assert sorted(carried) == ["1", "2", "3", "4", "5"]
    # The very overlays the mask URLs serve, pane by pane, and no mask URL left to fetch.
    screen = client.get(reverse("api:review-task", kwargs={"token": task.token})).json()
    for pane in screen["panes"]:
        assert carried[pane["label"]] == client.get(pane["mask_url"]).content
    assert "/review/m/" not in html
    assert re.findall(r'<link rel="preload"[^>]*href="([^"]+)"', html) == [
        reverse("review_image", kwargs={"token": task.token})
    ]


def test_masks_too_large_to_carry_are_all_linked_instead(client, monkeypatch):
    from annotation.selectors import review as review_selectors

    stage = review_stage(n_cases=2)
    login(client, MD)
    task, html = open_next(client, stage)
    sizes = sorted(len(png) for png in carried_masks(html).values())
    # One byte short of carrying them all: none is carried (never some masks and not others).
    monkeypatch.setattr(review_selectors, "INLINE_OVERLAYS_MAX_BYTES", sum(sizes) - 1)
    html = client.get(reverse("review_task", kwargs={"token": task.token})).content.decode()
    assert "data:image/png" not in html
    linked = re.findall(r'data-mask-url="(/review/m/[^"]+\.png)"', html)
    assert len(linked) == 5 and all(client.get(url).status_code == 200 for url in linked)
    assert len(re.findall(r'<link rel="preload"', html)) == 6
    # The next case's page will not carry its masks either: prefetched with its radiograph.
    monkeypatch.setattr(review_selectors, "INLINE_OVERLAYS_MAX_BYTES", 0)
    ahead = api(client, "ahead", token=task.token).json()
    assert len(ahead["prefetch"]) == 6


def test_drafts_are_kept_per_reader_validated_and_dropped_on_decision(client):
    stage = review_stage(n_cases=1)
    md = login(client, MD)
    task, _html = open_next(client, stage)
    url = reverse("api:review-draft", kwargs={"token": task.token})
    assert (
        f'data-draft-url="{url}"'
        in client.get(reverse("review_draw", kwargs={"token": task.token})).content.decode()
    )
    assert client.get(url).status_code == 204
    pixels = np.zeros((48, 64), bool)
    pixels[10:20, 10:20] = True
    wrong = client.put(url, png_of(np.zeros((10, 10), bool)), content_type="image/png")
    assert client.put(url, b"{}", content_type="application/json").status_code == 415
    assert wrong.status_code == 400 and "64×48" in wrong.content.decode()
    assert client.put(url, b"junk", content_type="image/png").status_code == 400
    saved = client.put(
        url,
        png_of(pixels),
        content_type="image/png",
        HTTP_X_DRAFT_UPDATED="2026-01-02T03:04:05.678Z",
    )
    assert saved.status_code == 204 and saved["X-Draft-Updated"] == "2026-01-02T03:04:05.678000Z"
    got = client.get(url)
    assert got.status_code == 200 and got["X-Draft-Updated"] == saved["X-Draft-Updated"]
    assert (np.asarray(Image.open(io.BytesIO(got.content))) > 0).sum() == 100
    # An older save (a late retry from a closed tab) does not overwrite a newer one.
    client.put(
        url, png_of(~pixels), content_type="image/png", HTTP_X_DRAFT_UPDATED="2025-01-01T00:00:00Z"
    )
    assert (np.asarray(Image.open(io.BytesIO(client.get(url).content))) > 0).sum() == 100
    other = UserFactory(roles=[MD])
    client.force_login(other)
    assert client.get(url).status_code == 404
    assert client.put(url, png_of(pixels), content_type="image/png").status_code == 404
    client.force_login(md)
    assert client.delete(url).status_code == 204
    assert not DrawingDraft.objects.exists()


def test_a_drawing_is_submitted_as_multipart_and_refining_names_the_candidate(client):
    stage = review_stage(n_cases=2)
    login(client, MD)
    task, _html = open_next(client, stage)
    api(client, "ahead", token=task.token)
    draw = client.get(
        reverse("review_draw", kwargs={"token": task.token}) + "?from=2"
    ).content.decode()
    base = re.search(r'name="base" value="([^"]+)"', draw).group(1)
    assert 'data-initial-mask-url="/review/m/' in draw
    url = re.search(r'data-draw-form data-api-url="([^"]+)"', draw).group(1)
    assert url == reverse("api:review-drawing", kwargs={"token": task.token})
    pixels = np.zeros((48, 64), bool)
    pixels[5:25, 5:30] = True
    bad = client.post(
        url, {"idempotency_key": form_key(draw), "base": "9", "mask": io.BytesIO(png_of(pixels))}
    )
    assert bad.status_code == 409 and "no pane at position 9" in bad.json()["detail"]
    ok = client.post(
        url,
        {
            "idempotency_key": form_key(draw),
            "base": base,
            "time_on_screen_ms": "4500",
            "mask": io.BytesIO(png_of(pixels)),
        },
    )
    assert ok.status_code == 201 and "/review/t/" in ok.json()["page_url"]
    assert task.token not in ok.json()["page_url"]
    decision = Decision.objects.get()
    assert (decision.outcome, decision.position, decision.candidate_id) == (
        "refined",
        2,
        task.candidate_order[1],
    )
    assert decision.time_on_screen_ms == 4500


def test_undo_sends_the_reader_back_to_the_case(client):
    stage = review_stage(n_cases=2)
    login(client, MD)
    task, html = open_next(client, stage)
    pick_first(client, task, html)
    response = client.post(reverse("review_undo", kwargs={"stage_id": stage.pk}))
    assert response.status_code == 302 and response.url == reverse(
        "review_task", kwargs={"token": task.token}
    )
    assert not GroundTruth.objects.exists()
    assert "Your last decision was undone" in client.get(response.url).content.decode()


def test_a_senior_md_adjudicates_in_the_browser_flow(client):
    stage = review_stage(n_cases=1, readers_per_case=2)
    for position in (1, 2):
        login(client, MD)
        task, html = open_next(client, stage)
        choose = task.candidate_order.index(sorted(task.candidate_order)[position - 1]) + 1
        client.post(
            reverse("review_pick", kwargs={"token": task.token}),
            {"position": choose, "idempotency_key": form_key(html)},
        )
    login(client, SENIOR_MD)
    response = client.get(reverse("review_adjudicate_next", kwargs={"stage_id": stage.pk}))
    page = client.get(response.url).content.decode()
    assert page.count("data-cm-pane data-position=") == 2 and "1 reader" in page
    token = response.url.rstrip("/").split("/")[-1]
    # The senior may reject both and draw, or refine one of the readers' masks.
    draw_url = reverse("review_draw", kwargs={"token": token})
    assert f'href="{draw_url}"' in page and "Reject both: draw or refine" in page
    drawing = client.get(draw_url + "?from=2").content.decode()
    assert 'data-review-screen="draw"' in drawing
    done = client.post(
        reverse("review_pick", kwargs={"token": token}),
        {"position": 2, "idempotency_key": form_key(page)},
    )
    assert done.status_code == 302
    assert GroundTruth.objects.get().method == "adjudication"


def test_the_next_case_is_leased_ahead_and_the_choice_lands_on_it(client):
    stage = review_stage(n_cases=3)
    md = login(client, MD)
    task, html = open_next(client, stage)
    assert f'data-ahead-url="/api/review/tasks/{task.token}/ahead/"' in html
    ahead = api(client, "ahead", token=task.token).json()
    nxt = ReviewTask.objects.exclude(pk=task.pk).get(reader=md)
    assert ahead["page_url"] == "http://testserver" + reverse(
        "review_task", kwargs={"token": nxt.token}
    )
    # Only its radiograph to fetch ahead: the page carries its masks.
    assert ahead["prefetch"] == [
        "http://testserver" + reverse("review_image", kwargs={"token": nxt.token})
    ]
    # Asking again holds no third case.
    api(client, "ahead", token=task.token)
    assert ReviewTask.objects.filter(reader=md, status="leased").count() == 2
    answer = api(
        client, "pick", {"position": 1, "idempotency_key": form_key(html)}, token=task.token
    )
    assert answer.json()["page_url"] == ahead["page_url"]
    # Without JavaScript the choice lands there too.
    client.post(reverse("review_undo", kwargs={"stage_id": stage.pk}))
    plain = pick_first(client, task, html.replace(form_key(html), "plain-form-key-1"))
    assert plain.url == reverse("review_task", kwargs={"token": nxt.token})


def test_the_progress_strip_is_an_htmx_fragment(client):
    stage = review_stage(n_cases=3)
    login(client, MD)
    task, html = open_next(client, stage)
    assert "case 1 of 3" in html
    client.get(pick_first(client, task, html).url)  # on to the next case
    nxt = ReviewTask.objects.filter(status="leased").get()
    fragment = client.get(
        reverse("review_progress", kwargs={"token": nxt.token}), HTTP_HX_REQUEST="true"
    )
    text = fragment.content.decode()
    assert text.startswith('<span class="review-progress"') and "case 2 of 3" in text


def keep(client, task):
    return api(client, "keep", token=task.token)


def test_a_reader_at_the_screen_keeps_the_case_past_its_first_lease(client):
    stage = review_stage(n_cases=2)
    md = login(client, MD)
    task, html = open_next(client, stage)
    # Opened long ago: the lease from opening has (almost) run out.
    almost = timezone.now() + timedelta(seconds=5)
    ReviewTask.objects.filter(pk=task.pk).update(lease_expires_at=almost)
    answer = keep(client, task)
    assert answer.status_code == 200
    task.refresh_from_db()
    assert task.lease_expires_at >= almost + timedelta(seconds=stage.lease_seconds - 60)
    assert answer.json()["lease_seconds"] == stage.lease_seconds
    # So nobody else is handed the case, and the reader's choice still counts.
    other = Client()
    login(other, MD)
    other_task, _ = open_next(other, stage)
    assert other_task.pk != task.pk
    done = pick_first(client, task, html)
    assert done.status_code == 302 and Decision.objects.filter(task=task, reader=md).exists()


def test_a_case_handed_on_while_the_reader_was_away_is_said_at_once(client):
    stage = review_stage(n_cases=1)
    login(client, MD)
    task, _ = open_next(client, stage)
    ReviewTask.objects.filter(pk=task.pk).update(lease_expires_at=timezone.now() - timedelta(1))
    other = Client()
    login(other, MD)
    taken, _ = open_next(other, stage)
    assert taken.pk == task.pk
    answer = keep(client, task)
    # Its token went with it: the case is not theirs, like a case that never was (404).
    assert answer.status_code == 404
    assert "lease ran out" in answer.json()["detail"]
    assert answer.json()["page_url"] == "http://testserver" + reverse("review_queue")
    taken.refresh_from_db()
    # The renewal did not take the case back from its new reader.
    assert taken.lease_expires_at > timezone.now() + timedelta(seconds=stage.lease_seconds - 60)
    assert ReviewTask.objects.get(pk=task.pk).reader_id == taken.reader_id != task.reader_id


def test_keeping_a_decided_case_points_to_the_next_one_and_changes_nothing(client):
    stage = review_stage(n_cases=2)
    login(client, MD)
    task, html = open_next(client, stage)
    pick_first(client, task, html)
    before = ReviewTask.objects.get(pk=task.pk)
    answer = keep(client, task)
    assert answer.status_code == 409 and answer.json()["detail"] == "This case is already decided."
    assert answer.json()["page_url"]
    after = ReviewTask.objects.get(pk=task.pk)
    assert (after.status, after.lease_expires_at) == (before.status, before.lease_expires_at)


def test_keeping_is_a_post_and_the_screens_carry_its_url(client):
    stage = review_stage(n_cases=1)
    login(client, MD)
    task, html = open_next(client, stage)
    url = reverse("api:review-keep", kwargs={"token": task.token})
    assert f'data-keep-url="{url}"' in html
    assert f'data-lease-seconds="{stage.lease_seconds}"' in html
    assert client.get(url).status_code == 405


def test_without_javascript_undo_shows_what_it_takes_back_before_it_does(client):
    stage = review_stage(n_cases=3)
    md = login(client, MD)
    first, html = open_next(client, stage)
    pick_first(client, first, html)
    second, second_html = open_next(client, stage)
    pick_first(client, second, second_html)
    confirm = client.get(reverse("review_undo", kwargs={"stage_id": stage.pk}) + "?back=/review/")
    page = confirm.content.decode()
    # The case's number in the reader's stage, and its image with the chosen mask, blinded.
    assert "Undo your decision on case 2?" in page and "you chose 1" in page
    assert reverse("review_image", kwargs={"token": second.token}) in page
    # The thumbnail is the pane's own blinded overlay, the one the screen showed as mask 1.
    thumb = re.search(r'src="(/review/m/[^"]+\.png)"', page).group(1)
    assert client.get(thumb).content == carried_masks(second_html)["1"]
    assert not Decision.objects.filter(revoked_at__isnull=False).exists()  # asking changed nothing
    # A link back to elsewhere is not followed.
    evil = client.get(
        reverse("review_undo", kwargs={"stage_id": stage.pk}) + "?back=javascript:alert(1)"
    )
    assert "javascript:" not in evil.content.decode()
    response = client.post(
        reverse("review_undo", kwargs={"stage_id": stage.pk}),
        {"idempotency_key": form_key(page)},
    )
    assert response.url == reverse("review_task", kwargs={"token": second.token})
    assert Decision.objects.get(task=second, reader=md).revoked_at is not None
    assert Decision.objects.get(task=first, reader=md).revoked_at is None


def test_without_javascript_a_round_is_undone_by_its_form(client):
    stage = review_stage(n_cases=1, mode=Stage.Mode.PAIRWISE, n_networks=2)
    login(client, MD)
    task, html = open_next(client, stage)
    assert "review_round_undo" not in html and "Undo round" not in html  # nothing played yet
    client.post(
        reverse("review_round", kwargs={"token": task.token}),
        {"number": 1, "choice": "A", "idempotency_key": form_key(html)},
    )
    html = client.get(reverse("review_task", kwargs={"token": task.token})).content.decode()
    assert "round 2 of 2" in html and "Undo round 1" in html
    response = client.post(
        reverse("review_round_undo", kwargs={"token": task.token}), {"number": 1}
    )
    assert response.url == reverse("review_task", kwargs={"token": task.token})
    assert "round 1 of 2" in client.get(response.url).content.decode()
    assert not task.rounds.exists()


def test_back_to_a_decided_case_shows_the_decision_read_only(client):
    stage = review_stage(n_cases=2)
    login(client, MD)
    task, html = open_next(client, stage)
    pick_first(client, task, html)
    for name in ("review_task", "review_draw"):
        page = client.get(reverse(name, kwargs={"token": task.token}))
        assert page.status_code == 200
        body = page.content.decode()
        assert "Case 1: you chose 1" in body and "Undo this decision" in body
        assert "Go on to your next case" in body and "data-review-form" not in body
    # Once a later case is decided, this one's undo is no longer offered.
    nxt, html = open_next(client, stage)
    pick_first(client, nxt, html)
    body = client.get(reverse("review_task", kwargs={"token": task.token})).content.decode()
    assert "Case 1: you chose 1" in body and "Undo this decision" not in body


def test_the_review_api_answers_a_signed_out_browser_in_json_not_with_a_login_page(client):
    stage = review_stage(n_cases=1)
    login(client, MD)
    task, html = open_next(client, stage)
    client.logout()
    answer = api(
        client, "pick", {"position": 1, "idempotency_key": form_key(html)}, token=task.token
    )
    assert answer.status_code in (401, 403)
    assert answer["Content-Type"] == "application/json"
    assert "credentials" in answer.json()["detail"]
    assert not Decision.objects.exists()
