"""The review API for MDs: queue, next case, rounds, picks, drawings, undo, adjudication, and
nothing in any answer that tells where a mask came from."""

from __future__ import annotations

import io
import uuid

import numpy as np
import pytest
from PIL import Image
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from annotation.models import Decision, GroundTruth, PairwiseRound, ReviewTask, Stage
from annotation.roles import MD, RESEARCHER, SENIOR_MD
from annotation.storage import blob_read
from cxrio.masks import mask_from_png
from tests.factories import UserFactory, review_stage

pytestmark = pytest.mark.django_db


def reader(*roles: str) -> tuple[object, APIClient]:
    account = UserFactory(roles=list(roles or [MD]))
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=account)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return account, client


def key() -> str:
    return uuid.uuid4().hex


def png_of(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8) * 255).save(buffer, "PNG")
    return buffer.getvalue()


def lease(client, stage, **body) -> dict:
    answer = client.post(f"/api/review/stages/{stage.pk}/next/", body, format="json")
    assert answer.status_code == 200, answer.content
    return answer.json()


def post(client, screen: dict, action: str, **body):
    return client.post(f"/api/review/tasks/{screen['task']}/{action}/", body, format="json")


def draw(client, screen: dict, pixels: np.ndarray, **fields):
    data = {"mask": io.BytesIO(png_of(pixels)), "idempotency_key": key(), **fields}
    return client.post(f"/api/review/tasks/{screen['task']}/drawing/", data, format="multipart")


def test_the_queue_shows_done_and_remaining_per_stage():
    stage = review_stage(n_cases=3)
    _md, client = reader()
    [row] = client.get("/api/review/stages/").json()
    assert (row["stage"], row["kind"], row["done"], row["remaining"]) == (stage.pk, "review", 0, 3)
    screen = lease(client, stage)
    assert post(client, screen, "pick", position=1, idempotency_key=key()).status_code == 201
    [row] = client.get("/api/review/stages/").json()
    assert (row["done"], row["remaining"], row["total"]) == (1, 2, 3)


def test_a_full_pairwise_knockout_through_the_api():
    stage = review_stage(n_cases=1, mode=Stage.Mode.PAIRWISE, n_networks=3)
    md, client = reader()
    screen = lease(client, stage)
    assert screen["kind"] == "pairwise" and screen["knockout"] == {"round": 1, "rounds": 3}
    assert [(p["position"], p["label"]) for p in screen["panes"]] == [(1, "A"), (2, "B")]
    # The lease answer is the screen the task URL shows.
    assert client.get(f"/api/review/tasks/{screen['task']}/").json()["panes"] == screen["panes"]
    for number, choice in ((1, "B"), (2, "A"), (3, "A")):
        answer = post(client, screen, "round", number=number, choice=choice, idempotency_key=key())
        assert answer.status_code == 201, answer.content
        result = answer.json()
        assert result["round"] == {"number": number, "choice": choice}
        if number < 3:
            assert result["decision"] is None
            assert result["screen"]["knockout"] == {"round": number + 1, "rounds": 3}
    assert result["screen"] is None
    assert result["decision"]["action"] == "chose" and result["decision"]["position"] == 1
    decision = Decision.objects.get(reader=md)
    last = PairwiseRound.objects.get(number=3)
    assert decision.candidate_id == last.winner_id == last.left_id
    assert GroundTruth.objects.get().mask_id == decision.mask_id
    # The case is done: its screen says so, with the decision, and shows no panes.
    done = client.get(f"/api/review/tasks/{screen['task']}/").json()
    assert done["kind"] == "done" and done["panes"] == [] and done["decision"]["position"] == 1


def test_a_round_replayed_with_its_key_changes_nothing_and_a_second_tab_gets_409():
    stage = review_stage(n_cases=1, mode=Stage.Mode.PAIRWISE, n_networks=3)
    _md, client = reader()
    screen = lease(client, stage)
    k = key()
    first = post(client, screen, "round", number=1, choice="A", idempotency_key=k)
    again = post(client, screen, "round", number=1, choice="A", idempotency_key=k)
    other = post(client, screen, "round", number=1, choice="B", idempotency_key=key())
    assert (first.status_code, again.status_code, other.status_code) == (201, 200, 409)
    assert again.json()["replayed"] and again.json()["round"] == first.json()["round"]
    assert other.json()["round"] == {"number": 1, "choice": "A"}
    wrong = post(client, screen, "round", number=3, choice="A", idempotency_key=key())
    assert wrong.status_code == 409 and "not the current round" in wrong.json()["detail"]
    assert PairwiseRound.objects.count() == 1


def test_neither_leads_to_the_drawing_which_decides_the_case():
    stage = review_stage(n_cases=1, mode=Stage.Mode.PAIRWISE, n_networks=2)
    md, client = reader()
    screen = lease(client, stage)
    answer = post(client, screen, "round", number=1, choice="neither", idempotency_key=key())
    drawing = answer.json()["screen"]
    assert drawing["kind"] == "draw"
    # "Start from" offers the pair just rejected, labelled as it was shown.
    assert [p["label"] for p in drawing["panes"]] == ["A", "B"]
    assert sorted(p["position"] for p in drawing["panes"]) == [1, 2]
    pixels = np.zeros((drawing["mask_height"], drawing["mask_width"]), bool)
    pixels[8:20, 10:30] = True
    done = draw(client, drawing, pixels, time_on_screen_ms=1500)
    assert done.status_code == 201 and done.json()["decision"]["action"] == "drew"
    decision = Decision.objects.get(reader=md)
    assert decision.outcome == "drew" and decision.mask.author == md
    # Kept as drawn; the decision's mask is its outline-normalised form (corners rounded).
    drawn = decision.mask.normalised_from
    np.testing.assert_array_equal(mask_from_png(blob_read(drawn.png.name)), pixels)
    assert drawn.author == md and drawn.kind == decision.mask.kind == "drawn"


def test_an_nway_pick_is_idempotent_and_a_second_key_gets_the_decision_that_stands():
    stage = review_stage(n_cases=2, n_networks=4)
    md, client = reader()
    screen = lease(client, stage)
    assert screen["kind"] == "nway" and screen["knockout"] is None
    assert [(p["position"], p["label"]) for p in screen["panes"]] == [
        (i, str(i)) for i in range(1, 6)
    ]
    k = key()
    first = post(client, screen, "pick", position=3, idempotency_key=k, time_on_screen_ms=900)
    retry = post(client, screen, "pick", position=3, idempotency_key=k, time_on_screen_ms=900)
    other_tab = post(client, screen, "pick", position=1, idempotency_key=key())
    assert (first.status_code, retry.status_code, other_tab.status_code) == (201, 200, 409)
    assert retry.json()["replayed"] and retry.json()["decision"] == first.json()["decision"]
    assert other_tab.json()["decision"]["position"] == 3
    assert "already decided" in other_tab.json()["detail"]
    task = ReviewTask.objects.get(token=screen["task"])
    decision = Decision.objects.get(reader=md)
    assert decision.candidate_id == task.candidate_order[2] and decision.time_on_screen_ms == 900

    second = lease(client, stage)
    assert second["task"] != screen["task"]
    bad = post(client, second, "pick", position=6, idempotency_key=key())
    assert bad.status_code == 409 and bad.json()["detail"] == "position must be 1 to 5, not 6"
    malformed = post(client, second, "pick", position=2.5, idempotency_key="short")
    assert malformed.status_code == 400
    assert set(malformed.json()) == {"position", "idempotency_key"}
    assert Decision.objects.count() == 1
    assert (
        client.post(f"/api/review/stages/{stage.pk}/next/", {}, format="json").json()["task"]
        == second["task"]
    )


def test_a_refinement_names_the_pane_it_starts_from_and_bad_drawings_change_nothing():
    stage = review_stage(n_cases=1)
    md, client = reader()
    screen = lease(client, stage)
    pixels = np.zeros((screen["mask_height"], screen["mask_width"]), bool)
    pixels[5:25, 5:30] = True
    wrong_size = draw(client, screen, np.ones((10, 10), bool), base=2)
    assert wrong_size.status_code == 400 and "64×48" in wrong_size.json()["detail"]
    not_png = client.post(
        f"/api/review/tasks/{screen['task']}/drawing/",
        {"mask": io.BytesIO(b"junk"), "idempotency_key": key()},
        format="multipart",
    )
    assert not_png.status_code == 400
    no_pane = draw(client, screen, pixels, base=9)
    assert no_pane.status_code == 409 and "no pane at position 9" in no_pane.json()["detail"]
    empty = draw(client, screen, np.zeros_like(pixels))
    assert empty.status_code == 400 and "no infection" in empty.json()["detail"]
    assert not Decision.objects.exists()
    refined = draw(client, screen, pixels, base=2)
    assert refined.status_code == 201 and refined.json()["decision"] == {
        **refined.json()["decision"],
        "action": "refined",
        "position": 2,
    }
    task = ReviewTask.objects.get(token=screen["task"])
    decision = Decision.objects.get(reader=md)
    assert (decision.outcome, decision.candidate_id) == ("refined", task.candidate_order[1])


def test_undo_takes_back_only_the_decision_its_key_names():
    stage = review_stage(n_cases=3)
    md, client = reader()
    first_key, second_key = key(), key()
    first = lease(client, stage)
    post(client, first, "pick", position=1, idempotency_key=first_key)
    second = lease(client, stage)
    post(client, second, "pick", position=2, idempotency_key=second_key)
    assert GroundTruth.objects.count() == 2
    url = f"/api/review/stages/{stage.pk}/undo/"
    not_last = client.post(url, {"idempotency_key": first_key}, format="json")
    assert not_last.status_code == 409 and "only your last decision" in not_last.json()["detail"]
    undone = client.post(url, {"idempotency_key": second_key}, format="json")
    assert undone.status_code == 200
    assert undone.json()["task"] == second["task"] and undone.json()["kind"] == "nway"
    assert undone.json()["decision"] is None
    # A retried undo returns the same case and leaves the earlier decision alone.
    again = client.post(url, {"idempotency_key": second_key}, format="json")
    assert again.status_code == 200 and again.json()["task"] == second["task"]
    active = Decision.objects.filter(reader=md, revoked_at__isnull=True)
    assert [d.idempotency_key for d in active] == [first_key]
    assert GroundTruth.objects.count() == 1
    unknown = client.post(url, {"idempotency_key": key()}, format="json")
    assert unknown.status_code == 409
    # The case is decided again as if for the first time.
    redo = post(client, second, "pick", position=4, idempotency_key=key())
    assert redo.status_code == 201 and redo.json()["decision"]["position"] == 4


def test_an_md_can_never_reach_another_mds_case_and_a_researcher_never_decides():
    stage = review_stage(n_cases=2)
    _md, client = reader()
    screen = lease(client, stage)
    _other, other = reader()
    urls = [
        f"/api/review/tasks/{screen['task']}/",
        screen["image_url"],
        *(p["mask_url"] for p in screen["panes"]),
    ]
    assert all(client.get(u).status_code == 200 for u in urls)
    for url in urls:
        answer = other.get(url)
        assert answer.status_code == 404 and answer["Content-Type"] == "application/json", url
    assert post(other, screen, "pick", position=1, idempotency_key=key()).status_code == 404
    _researcher, research = reader(RESEARCHER)
    assert post(research, screen, "pick", position=1, idempotency_key=key()).status_code == 403
    assert research.get("/api/review/stages/").status_code == 403
    assert not Decision.objects.exists()
    assert APIClient().get("/api/review/stages/").status_code == 401


def test_a_senior_md_adjudicates_between_readers_by_position():
    stage = review_stage(n_cases=1, readers_per_case=2)
    for position in (1, 2):
        _md, client = reader()
        screen = lease(client, stage)
        task = ReviewTask.objects.get(token=screen["task"])
        choose = task.candidate_order.index(sorted(task.candidate_order)[position - 1]) + 1
        assert (
            post(client, screen, "pick", position=choose, idempotency_key=key()).status_code == 201
        )
    refused = client.post(
        f"/api/review/stages/{stage.pk}/next/", {"kind": "adjudication"}, format="json"
    )
    assert refused.status_code == 403
    _senior, senior = reader(SENIOR_MD)
    [row] = senior.get("/api/review/stages/").json()
    assert (row["kind"], row["remaining"]) == ("adjudication", 1)
    screen = lease(senior, stage)
    assert screen["kind"] == "adjudication"
    assert [(p["position"], p["votes"]) for p in screen["panes"]] == [(1, 1), (2, 1)]
    assert senior.get(screen["panes"][0]["mask_url"]).status_code == 200
    # The senior may also draw (or refine a reader's mask); bad input stores nothing.
    h, w = screen["mask_height"], screen["mask_width"]
    refused = draw(senior, screen, np.zeros((h, w), bool), base=1, no_infection=True)
    assert refused.status_code in (400, 409, 422) and not GroundTruth.objects.exists()
    assert draw(senior, screen, np.ones((h, w), bool), base=7).status_code in (400, 409, 422)
    assert not GroundTruth.objects.exists()
    answer = post(senior, screen, "pick", position=2, idempotency_key=key())
    assert answer.status_code == 201 and answer.json()["decision"]["action"] == "chose"
    assert GroundTruth.objects.get().method == "adjudication"
    # Rounds, drawings and undo are readers' actions, not adjudicators'.
    assert (
        post(senior, screen, "round", number=1, choice="A", idempotency_key=key()).status_code
        == 403
    )


def test_an_empty_queue_or_closed_stage_answers_204_and_a_stage_not_in_review_409():
    stage = review_stage(n_cases=1)
    _md, client = reader()
    post(client, lease(client, stage), "pick", position=1, idempotency_key=key())
    assert client.post(f"/api/review/stages/{stage.pk}/next/").status_code == 204
    Stage.objects.filter(pk=stage.pk).update(status=Stage.Status.CLOSED)
    assert client.post(f"/api/review/stages/{stage.pk}/next/").status_code == 204
    Stage.objects.filter(pk=stage.pk).update(status=Stage.Status.TRAINING)
    training = client.post(f"/api/review/stages/{stage.pk}/next/")
    assert training.status_code == 409 and "not open for review" in training.json()["detail"]
    assert client.post("/api/review/stages/999999/next/").status_code == 404


def test_undo_without_a_key_takes_back_the_last_decision_as_the_screens_undo_button_does():
    stage = review_stage(n_cases=2)
    _md, client = reader()
    first = lease(client, stage)
    post(client, first, "pick", position=1, idempotency_key=key())
    undone = client.post(f"/api/review/stages/{stage.pk}/undo/", {}, format="json")
    assert undone.status_code == 200 and undone.json()["task"] == first["task"]
    assert undone.json()["page_url"].endswith(f"/review/t/{first['task']}/")
    assert not GroundTruth.objects.exists()
    nothing = client.post(f"/api/review/stages/{stage.pk}/undo/", {}, format="json")
    assert nothing.status_code == 409 and "no decision of yours" in nothing.json()["detail"]


def test_a_senior_md_draws_the_accepted_mask_through_the_api():
    stage = review_stage(n_cases=1, readers_per_case=2)
    for position in (1, 2):
        _md, client = reader()
        screen = lease(client, stage)
        task = ReviewTask.objects.get(token=screen["task"])
        choose = task.candidate_order.index(sorted(task.candidate_order)[position - 1]) + 1
        post(client, screen, "pick", position=choose, idempotency_key=key())
    _senior, senior = reader(SENIOR_MD)
    screen = lease(senior, stage)
    pixels = np.zeros((screen["mask_height"], screen["mask_width"]), bool)
    pixels[4:12, 6:20] = True
    answer = draw(senior, screen, pixels)
    assert answer.status_code == 201 and answer.json()["decision"]["action"] == "drew"
    truth = GroundTruth.objects.get()
    assert (truth.method, truth.source, truth.mask.author) == ("adjudication", "drawn", _senior)
