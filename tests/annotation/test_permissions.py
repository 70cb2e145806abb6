"""Who reaches what: every endpoint and screen × every role, as one table.

Extend MATRIX when you add a screen or an endpoint: one Row per (method, URL), with the status
each role gets. `test_every_route_is_in_the_matrix` fails until a new API route or exports
screen has its row. Paths are formatted with the ids of a small world ({dataset}, {radiograph},
{truth}, {stage}, {job}, {export}).

Rules the table encodes: anonymous users get 401 from the API and the login page from screens;
MDs and senior MDs never reach provenance, ground truths, stages, jobs or exports; researchers
and admins never reach a reader's review screens, so they can never decide.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.authtoken.models import Token

from annotation.services.exports import export_build, export_request
from tests.annotation.exporting import provenance_scenario, user

pytestmark = pytest.mark.django_db

ANON, MD, SENIOR, ADMIN, RESEARCHER = "anonymous", "md", "senior_md", "admin", "researcher"
ROLES = (ANON, MD, SENIOR, ADMIN, RESEARCHER)


# Any 3xx or 4xx answer: the request did nothing (used where the owning screen's own tests
# pin the exact answer, e.g. a reader sent back to the queue with a message).
REFUSED = "refused"


def by_role(anonymous, md, senior_md, admin, researcher) -> dict[str, int | str]:
    return dict(zip(ROLES, (anonymous, md, senior_md, admin, researcher), strict=True))


@dataclass(frozen=True)
class Row:
    method: str
    path: str
    expect: dict[str, int | str]
    name: str  # the URL name, so coverage can be checked
    data: dict = field(default_factory=dict)


API_READ = by_role(401, 403, 403, 200, 200)  # data and provenance: admins and researchers
API_NO_WRITE = by_role(401, 403, 403, 405, 405)  # read-only for now, even for admins
RESEARCH_SCREEN = by_role(302, 403, 403, 200, 200)
PUBLIC = by_role(200, 200, 200, 200, 200)
READER_SCREEN = by_role(302, 200, 200, 403, 403)
READER_ACTION = by_role(302, REFUSED, REFUSED, 403, 403)  # no one decides on a bogus task

MATRIX: list[Row] = [
    # --- REST API: data -----------------------------------------------------------------
    Row("GET", "/api/datasets/", API_READ, "api:dataset-list"),
    Row("GET", "/api/datasets/{dataset}/", API_READ, "api:dataset-detail"),
    Row("POST", "/api/datasets/", API_NO_WRITE, "api:dataset-list"),
    Row("GET", "/api/radiographs/", API_READ, "api:radiograph-list"),
    Row("GET", "/api/radiographs/{radiograph}/", API_READ, "api:radiograph-detail"),
    Row("GET", "/api/radiographs/{radiograph}/image/", API_READ, "api:radiograph-image"),
    Row("DELETE", "/api/radiographs/{radiograph}/", API_NO_WRITE, "api:radiograph-detail"),
    Row("GET", "/api/ground-truths/", API_READ, "api:groundtruth-list"),
    Row("GET", "/api/ground-truths/{truth}/", API_READ, "api:groundtruth-detail"),
    Row("GET", "/api/ground-truths/{truth}/mask/", API_READ, "api:groundtruth-mask"),
    Row("PATCH", "/api/ground-truths/{truth}/", API_NO_WRITE, "api:groundtruth-detail"),
    # --- REST API: stages and jobs (launch, cancel, retry come with orchestration) --------
    Row("GET", "/api/stages/", API_READ, "api:stage-list"),
    Row("GET", "/api/stages/{stage}/", API_READ, "api:stage-detail"),
    Row("POST", "/api/stages/", API_NO_WRITE, "api:stage-list"),
    Row("GET", "/api/jobs/", API_READ, "api:job-list"),
    Row("GET", "/api/jobs/{job}/", API_READ, "api:job-detail"),
    Row("DELETE", "/api/jobs/{job}/", API_NO_WRITE, "api:job-detail"),
    # --- REST API: exports ----------------------------------------------------------------
    Row("GET", "/api/exports/", API_READ, "api:export-list"),
    Row(
        "POST",
        "/api/exports/",
        by_role(401, 403, 403, 201, 201),
        "api:export-list",
        data={"dataset": "{dataset}"},
    ),  # fmt: skip
    Row("GET", "/api/exports/{export}/", API_READ, "api:export-detail"),
    Row("GET", "/api/exports/{export}/download/", API_READ, "api:export-download"),
    Row("DELETE", "/api/exports/{export}/", API_NO_WRITE, "api:export-detail"),
    Row("PUT", "/api/exports/{export}/", API_NO_WRITE, "api:export-detail"),
    # --- REST API: auth, schema, docs -----------------------------------------------------
    Row("POST", "/api/auth/token/", by_role(400, 400, 400, 400, 400), "api:token"),  # no body
    Row("GET", "/api/schema/", PUBLIC, "api:schema"),
    Row("GET", "/api/docs/", PUBLIC, "api:docs"),
    Row("GET", "/api/docs/redoc/", PUBLIC, "api:redoc"),
    # --- screens --------------------------------------------------------------------------
    Row("GET", "/", by_role(302, 200, 200, 200, 200), "home"),
    Row("GET", "/exports/", RESEARCH_SCREEN, "exports"),
    Row("POST", "/exports/", by_role(302, 403, 403, 400, 400), "exports"),  # empty form
    Row("GET", "/exports/{export}/row", RESEARCH_SCREEN, "export_row"),
    Row("GET", "/exports/{export}/download", RESEARCH_SCREEN, "export_download"),
    Row("GET", "/review/", READER_SCREEN, "review_queue"),
    Row("POST", "/review/t/no-such-task/pick", READER_ACTION, "review_pick"),
    Row("POST", "/review/t/no-such-task/round", READER_ACTION, "review_round"),
    Row("POST", "/review/t/no-such-task/submit", READER_ACTION, "review_draw_submit"),
]


@pytest.fixture
def world(tmp_path):
    scenario = provenance_scenario(tmp_path)
    accounts = {
        MD: scenario.users["md1"],
        SENIOR: scenario.users["senior"],
        ADMIN: user("admin", "admin"),
        RESEARCHER: user("researcher", "researcher"),
    }
    export = export_request(
        dataset=scenario.dataset, created_by=accounts[RESEARCHER], enqueue=False
    )
    export_build(export=export)
    truth = scenario.cases["c.png"].ground_truth
    ids = {
        "dataset": scenario.dataset.pk,
        "radiograph": scenario.cases["a.png"].pk,
        "truth": truth.pk,
        "stage": scenario.stages[1].pk,
        "job": export.job_id,
        "export": export.pk,
    }
    return accounts, ids


def client_as(role: str, accounts: dict, *, api: bool) -> Client:
    client = Client()
    if role == ANON:
        return client
    if api:  # API clients use tokens; screens use the browser session
        token, _ = Token.objects.get_or_create(user=accounts[role])
        client.defaults["HTTP_AUTHORIZATION"] = f"Token {token.key}"
    else:
        client.force_login(accounts[role])
    return client


def call(client: Client, row: Row, ids: dict) -> int:
    path = row.path.format(**ids)
    data = {k: v.format(**ids) if isinstance(v, str) else v for k, v in row.data.items()}
    if row.method == "GET":
        return client.get(path).status_code
    handler = getattr(client, row.method.lower())
    if path.startswith("/api/"):  # the API takes JSON bodies
        if "dataset" in data:
            data["dataset"] = int(data["dataset"])
        return handler(path, json.dumps(data), content_type="application/json").status_code
    return handler(path, data).status_code


@pytest.mark.parametrize("role", ROLES)
def test_each_role_gets_what_the_matrix_says(world, role):
    accounts, ids = world
    wrong = []
    for row in MATRIX:
        client = client_as(role, accounts, api=row.path.startswith("/api/"))
        got, expected = call(client, row, ids), row.expect[role]
        if got != expected and not (expected == REFUSED and 300 <= got < 500):
            wrong.append(f"{row.method} {row.path}: expected {row.expect[role]}, got {got}")
    assert not wrong, f"as {role}:\n  " + "\n  ".join(wrong)


def test_anonymous_screens_send_people_to_the_login_page(world):
    answer = Client().get("/exports/")
    assert answer.status_code == 302 and answer["Location"].startswith("/accounts/login/")


def _named_routes(resolver, namespace="") -> set[str]:
    names = set()
    for entry in resolver.url_patterns:
        if isinstance(entry, URLResolver):
            inner = f"{namespace}{entry.namespace}:" if entry.namespace else namespace
            names |= _named_routes(entry, inner)
        elif isinstance(entry, URLPattern) and entry.name:
            names.add(namespace + entry.name)
    return names


def test_every_route_is_in_the_matrix():
    covered = {row.name for row in MATRIX}
    routes = _named_routes(get_resolver())
    watched = {n for n in routes if n.startswith("api:") or n.startswith("export")}
    missing = sorted(watched - covered)
    assert not missing, f"add rows to MATRIX for: {', '.join(missing)}"


@pytest.mark.parametrize("role", [ADMIN, RESEARCHER])
def test_researchers_and_admins_cannot_decide_on_a_real_task(world, role):
    from annotation.models import Candidate, Decision, ReviewTask, Stage

    accounts, _ = world
    stage = Stage.objects.get(number=2)
    candidate = Candidate.objects.filter(stage=stage).first()
    task = ReviewTask.objects.create(
        stage=stage, radiograph=candidate.radiograph, slot=5, candidate_order=[candidate.pk]
    )
    before = Decision.objects.count()
    client = client_as(role, accounts, api=False)
    for action in ("pick", "round", "submit"):
        answer = client.post(
            f"/review/t/{task.token}/{action}", {"position": 1, "key": f"k-{role}-{action}"}
        )
        assert answer.status_code == 403, action
    assert Decision.objects.count() == before
    task.refresh_from_db()
    assert task.status == "open" and task.reader is None
