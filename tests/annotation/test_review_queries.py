"""The review path's database work is bounded: the queries of a screen, an image, the look-ahead
and a decision do not grow with the number of cases in the stage or of decisions already made,
and none of them joins tables it does not read (the models' default orderings would join a
task's stage and dataset to sort a single row)."""

from __future__ import annotations

import re
import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from annotation.models import Stage
from annotation.roles import MD
from tests.factories import PASSWORD, UserFactory, review_stage

pytestmark = pytest.mark.django_db

# The round the pairwise choice form answers (the bar's undo form names another number).
ROUND_NUMBER = re.compile(r'data-review-form.*?name="number" value="(\d+)"', re.DOTALL)

# The most each request may take (the session, and the user with their roles in one statement).
SCREEN_QUERIES = {Stage.Mode.NWAY: 6, Stage.Mode.PAIRWISE: 7}
IMAGE_QUERIES = 4
# The next case leased ahead: the reader's row locked, the claim and its savepoint, its masks
# (whether its page will carry them; pairwise: and the rounds of its screen).
AHEAD_QUERIES = {Stage.Mode.NWAY: 12, Stage.Mode.PAIRWISE: 13}
# A decision: the task locked, the decision written, the case accepted with its provenance and
# audited (pairwise: the last round, which is the decision; earlier rounds take fewer).
SUBMIT_QUERIES = {Stage.Mode.NWAY: 22, Stage.Mode.PAIRWISE: 30}
# Tables no request of the review path reads: its rows carry the ids it needs.
UNREAD = ('"annotation_dataset"', "annotation_dataset.")

JOINS_UNREAD: list[str] = []


def queries(call) -> tuple[int, object]:
    with CaptureQueriesContext(connection) as captured:
        result = call()
    JOINS_UNREAD.extend(
        q["sql"] for q in captured.captured_queries if any(t in q["sql"] for t in UNREAD)
    )
    return len(captured), result


def work_through(client, stage: Stage, n: int) -> list[dict]:
    """Decide `n` cases as review.js does; per case, the queries of each request."""
    seen = []
    url = reverse("review_next", kwargs={"stage_id": stage.pk})
    for _ in range(n):
        if "/review/s/" in url:
            url = client.get(url).url
        screen_n, page = queries(lambda url=url: client.get(url))
        assert page.status_code == 200
        html = page.content.decode()
        images = [
            queries(lambda u=u: client.get(u))[0]
            for u in re.findall(r'data-(?:image|mask)-url="(/[^"]+)"', html)
        ]
        token = url.rstrip("/").split("/")[-1]
        ahead_n, ahead = queries(
            lambda token=token: client.post(
                reverse("api:review-ahead", kwargs={"token": token}),
                content_type="application/json",
            )
        )
        assert ahead.status_code == 200, ahead.content
        if 'data-review-screen="pairwise"' in html:
            number = int(re.search(ROUND_NUMBER, html).group(1))
            path = reverse("api:review-round", kwargs={"token": token})
            body = {"number": number, "choice": "A"}
        else:
            path = reverse("api:review-pick", kwargs={"token": token})
            body = {"position": 1}
        body["idempotency_key"] = str(uuid.uuid4())
        submit_n, answer = queries(
            lambda path=path, body=body: client.post(path, body, content_type="application/json")
        )
        assert answer.status_code == 201, answer.content
        seen.append({"screen": screen_n, "images": images, "ahead": ahead_n, "submit": submit_n})
        url = answer.json()["page_url"]
    return seen


@pytest.mark.parametrize("mode", [Stage.Mode.NWAY, Stage.Mode.PAIRWISE])
def test_screens_images_and_decisions_take_a_bounded_number_of_queries(client, mode):
    counts = {}
    JOINS_UNREAD.clear()
    for n_cases in (2, 8):
        stage = review_stage(n_cases=n_cases, mode=mode, n_networks=4 if mode == "nway" else 2)
        user = UserFactory(roles=[MD])
        client.login(username=user.username, password=PASSWORD)
        counts[n_cases] = work_through(client, stage, 2 if n_cases == 2 else 6)
        client.logout()
    everything = counts[2] + counts[8]
    assert max(c["screen"] for c in everything) <= SCREEN_QUERIES[mode]
    assert max(max(c["images"]) for c in everything) <= IMAGE_QUERIES
    # Only the radiograph is fetched: the page carries its masks.
    assert all(len(c["images"]) == 1 for c in everything)
    assert max(c["ahead"] for c in everything) <= AHEAD_QUERIES[mode]
    assert max(c["submit"] for c in everything) <= SUBMIT_QUERIES[mode]
    assert JOINS_UNREAD == [], JOINS_UNREAD[0]
    # Four times the cases, and decisions already made, change nothing.
    later = counts[8][-1]
    assert later["screen"] == counts[2][0]["screen"]
    assert max(later["images"]) == max(counts[2][0]["images"])
    # A submit also leases the next case; which one (and so whether a knockout's last round or
    # its first is timed) varies by a query or so on PostgreSQL: growth would be far more.
    assert max(c["submit"] for c in counts[8]) <= max(c["submit"] for c in counts[2]) + 1
