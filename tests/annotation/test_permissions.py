"""Who reaches what: every endpoint and screen × every role, as one table.

Extend MATRIX when you add a screen or an endpoint: one Row per (method, URL), with the status
each role gets. `test_every_route_is_in_the_matrix` fails until a new route has its row. Paths
are formatted with the ids of a small world (tests/annotation/permission_world.py): {dataset},
{radiograph}, {truth} and its {mask}, {stage}, {job}, {export}; {review} (a stage in review), {mine} and
{other} (the tasks this MD and another MD hold there) with {mine_mask} and {other_mask} (an
option of each) and {flag} (the other MD's flag on their case); {draft} (a draft stage), {queued} (a queued job), {model} and {run} (a detector
run), {upload} and {admin_upload} (analyses uploaded by the researcher and by the admin).

Rules the table encodes: anonymous users get 401 from the API and the login page from screens;
MDs and senior MDs never reach provenance, ground truths, stages, jobs, exports, the detector
or the viewer; an MD never reaches another MD's case or its images (404, like a case that does
not exist); researchers and admins never reach a reader's review screens or the review API, so
they can never decide; only admins launch, cancel, retry and deploy; the Django admin site is
for staff accounts, which no role grants.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.authtoken.models import Token

from annotation.models import Decision, ReviewTask
from tests.annotation.permission_world import (
    ADMIN,
    ANON,
    MD,
    RESEARCHER,
    ROLES,
    build_world,
)

pytestmark = pytest.mark.django_db

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
    form: bool = False  # an API row sent as multipart (uploads) instead of JSON


API_READ = by_role(401, 403, 403, 200, 200)  # data and provenance: admins and researchers
API_NO_WRITE = by_role(401, 403, 403, 405, 405)  # read-only, even for admins
API_ADMIN = by_role(401, 403, 403, 200, 403)  # admins' write actions
API_ADMIN_CONFLICT = by_role(401, 403, 403, 409, 403)  # reached, but the state says no
API_READER = by_role(401, 200, 200, 403, 403)  # the review API
API_MY_CASE = by_role(401, 200, 404, 403, 403)  # the MD's own case: a senior MD cannot see it
API_OTHERS_CASE = by_role(401, 404, 404, 403, 403)  # another MD's case looks like none
RESEARCH_SCREEN = by_role(302, 403, 403, 200, 200)
ADMIN_SCREEN = by_role(302, 403, 403, 200, 403)
ADMIN_ACTION = by_role(302, 403, 403, 302, 403)  # done (or refused with a message), redirected
PUBLIC = by_role(200, 200, 200, 200, 200)
READER_SCREEN = by_role(302, 200, 200, 403, 403)
MD_SCREEN = by_role(302, 200, 403, 403, 403)
MY_CASE_SCREEN = by_role(302, 200, 404, 403, 403)
OTHERS_CASE_SCREEN = by_role(302, 404, 404, 403, 403)
READER_ACTION = by_role(302, REFUSED, REFUSED, 403, 403)  # no one decides on a bogus task
MD_ACTION = by_role(302, REFUSED, 403, 403, 403)
HEALTH = "up or down"  # 200 or 503, whatever the broker says; never a login or a refusal
KEY = "matrix-key-0001"
PICK = {"position": 1, "idempotency_key": KEY}
FLAG = {"reason": "unsure", "idempotency_key": KEY}

MATRIX: list[Row] = [
    # --- REST API: data -----------------------------------------------------------------
    Row("GET", "/api/datasets/", API_READ, "api:dataset-list"),
    Row("GET", "/api/datasets/{dataset}/", API_READ, "api:dataset-detail"),
    Row("POST", "/api/datasets/", API_NO_WRITE, "api:dataset-list"),
    Row(
        "PATCH",
        "/api/datasets/{dataset}/",
        API_ADMIN,
        "api:dataset-detail",
        data={"licence": "CC BY 4.0"},
    ),
    Row("PUT", "/api/datasets/{dataset}/", API_NO_WRITE, "api:dataset-detail"),
    Row("GET", "/api/radiographs/", API_READ, "api:radiograph-list"),
    Row("GET", "/api/radiographs/{radiograph}/", API_READ, "api:radiograph-detail"),
    Row("GET", "/api/radiographs/{radiograph}/image/", API_READ, "api:radiograph-image"),
    Row("DELETE", "/api/radiographs/{radiograph}/", API_NO_WRITE, "api:radiograph-detail"),
    Row("GET", "/api/ground-truths/", API_READ, "api:groundtruth-list"),
    Row("GET", "/api/ground-truths/{truth}/", API_READ, "api:groundtruth-detail"),
    Row("GET", "/api/ground-truths/{truth}/mask/", API_READ, "api:groundtruth-mask"),
    Row("PATCH", "/api/ground-truths/{truth}/", API_NO_WRITE, "api:groundtruth-detail"),
    # --- REST API: stages and jobs (admins write) -------------------------------------------
    Row("GET", "/api/stages/", API_READ, "api:stage-list"),
    Row("GET", "/api/stages/{stage}/", API_READ, "api:stage-detail"),
    Row("POST", "/api/stages/", API_ADMIN_CONFLICT, "api:stage-list", {"dataset": "{dataset}"}),
    Row("PATCH", "/api/stages/{stage}/", API_NO_WRITE, "api:stage-detail"),
    Row("POST", "/api/stages/{stage}/launch/", API_ADMIN_CONFLICT, "api:stage-launch"),
    Row("POST", "/api/stages/{stage}/cancel/", API_ADMIN_CONFLICT, "api:stage-cancel"),
    Row("POST", "/api/stages/{draft}/cancel/", API_ADMIN, "api:stage-cancel"),
    Row("GET", "/api/jobs/", API_READ, "api:job-list"),
    Row("GET", "/api/jobs/{job}/", API_READ, "api:job-detail"),
    Row("DELETE", "/api/jobs/{job}/", API_NO_WRITE, "api:job-detail"),
    Row("POST", "/api/jobs/{job}/retry/", API_ADMIN_CONFLICT, "api:job-retry"),
    Row("POST", "/api/jobs/{queued}/cancel/", API_ADMIN, "api:job-cancel"),
    # --- REST API: exports ----------------------------------------------------------------
    Row("GET", "/api/exports/", API_READ, "api:export-list"),
    Row(
        "POST",
        "/api/exports/",
        by_role(401, 403, 403, 201, 201),
        "api:export-list",
        {"dataset": "{dataset}"},
    ),
    Row("GET", "/api/exports/{export}/", API_READ, "api:export-detail"),
    Row("GET", "/api/exports/{export}/download/", API_READ, "api:export-download"),
    Row("DELETE", "/api/exports/{export}/", API_NO_WRITE, "api:export-detail"),
    Row("PUT", "/api/exports/{export}/", API_NO_WRITE, "api:export-detail"),
    # --- REST API: inference (uploads are their owner's and admins') ------------------------
    Row(
        "POST", "/api/inference/", by_role(401, 403, 403, 400, 400), "api:inference-list", form=True
    ),  # no file: refused with the reason
    Row("GET", "/api/inference/{upload}/", API_READ, "api:inference-detail"),
    Row(
        "GET",
        "/api/inference/{admin_upload}/",
        by_role(401, 403, 403, 200, 404),
        "api:inference-detail",
    ),
    Row("GET", "/api/inference/{upload}/images/map/", API_READ, "api:inference-image"),
    Row(
        "GET",
        "/api/inference/{admin_upload}/images/map/",
        by_role(401, 403, 403, 200, 404),
        "api:inference-image",
    ),
    # --- REST API: review (MDs and senior MDs; no provenance) -------------------------------
    Row("GET", "/api/review/stages/", API_READER, "api:review-queue"),
    Row(
        "POST",
        "/api/review/stages/{review}/next/",
        by_role(401, 200, 204, 403, 403),
        "api:review-next",
    ),
    Row("GET", "/api/review/tasks/{mine}/", API_MY_CASE, "api:review-task"),
    Row("GET", "/api/review/tasks/{other}/", API_OTHERS_CASE, "api:review-task"),
    Row("GET", "/api/review/images/{mine}.png", API_MY_CASE, "api:review-image"),
    Row("GET", "/api/review/images/{other}.png", API_OTHERS_CASE, "api:review-image"),
    Row("GET", "/api/review/masks/{mine_mask}.png", API_MY_CASE, "api:review-mask"),
    Row("GET", "/api/review/masks/{other_mask}.png", API_OTHERS_CASE, "api:review-mask"),
    Row("POST", "/api/review/tasks/{other}/pick/", API_OTHERS_CASE, "api:review-pick", PICK),
    Row(
        "POST",
        "/api/review/tasks/{mine}/round/",
        by_role(401, 409, 403, 403, 403),
        "api:review-round",
        {"number": 1, "choice": "A", "idempotency_key": KEY},
    ),
    Row(
        "POST",
        "/api/review/tasks/{mine}/round/undo/",
        by_role(401, 409, 403, 403, 403),
        "api:review-round-undo",
        {"number": 1},
    ),
    Row(
        "POST",
        "/api/review/tasks/{other}/round/undo/",
        by_role(401, 404, 403, 403, 403),
        "api:review-round-undo",
        {"number": 1},
    ),
    Row(
        "POST",
        "/api/review/tasks/{other}/drawing/",
        API_OTHERS_CASE,
        "api:review-drawing",
        {"mask": "{drawing}", "idempotency_key": KEY},
        form=True,
    ),
    Row(
        "POST",
        "/api/review/tasks/{other}/refine/",
        API_OTHERS_CASE,
        "api:review-refine",
        {"clicks": [{"x": 1, "y": 1, "positive": True}], "zones": [], "mask": None},
    ),
    Row(
        "POST",
        "/api/review/stages/{review}/undo/",
        by_role(401, 409, 403, 403, 403),
        "api:review-undo",
        {"idempotency_key": KEY},
    ),
    # what the review screens' JavaScript asks besides: keep a case, lease the next one ahead,
    # the drawing in progress
    Row("POST", "/api/review/tasks/{mine}/keep/", API_MY_CASE, "api:review-keep"),
    Row("POST", "/api/review/tasks/{other}/keep/", API_OTHERS_CASE, "api:review-keep"),
    Row(
        "POST",
        "/api/review/tasks/{other}/ahead/",
        by_role(401, 404, 403, 403, 403),
        "api:review-ahead",
    ),
    Row(
        "GET",
        "/api/review/tasks/{mine}/draft/",
        by_role(401, 204, 404, 403, 403),
        "api:review-draft",
    ),
    Row("GET", "/api/review/tasks/{other}/draft/", API_OTHERS_CASE, "api:review-draft"),
    # a reader's decided cases (reopen one by the key it was decided with), flag and skip
    Row("GET", "/api/review/stages/{review}/cases/", API_READER, "api:review-cases"),
    Row(
        "POST",
        "/api/review/tasks/{other}/reopen/",
        by_role(401, 404, 403, 403, 403),
        "api:review-reopen",
        {"idempotency_key": KEY},
    ),
    Row("POST", "/api/review/tasks/{other}/flag/", API_OTHERS_CASE, "api:review-flag", FLAG),
    Row("POST", "/api/review/tasks/{other}/skip/", API_OTHERS_CASE, "api:review-skip", FLAG),
    # --- REST API: auth, schema, docs -----------------------------------------------------
    Row("POST", "/api/auth/token/", by_role(400, 400, 400, 400, 400), "api:token"),  # no body
    Row("GET", "/api/schema/", PUBLIC, "api:schema"),
    Row("GET", "/api/docs/", PUBLIC, "api:docs"),
    Row("GET", "/api/docs/redoc/", PUBLIC, "api:redoc"),
    # --- site -----------------------------------------------------------------------------
    Row("GET", "/", by_role(302, 200, 200, 200, 200), "home"),
    Row("GET", "/healthz", by_role(*[HEALTH] * 5), "healthz"),
    Row("GET", "/accounts/login/", by_role(200, 302, 302, 302, 302), "login"),
    Row("GET", "/accounts/password/", by_role(302, 200, 200, 200, 200), "password_change"),
    # An empty form: the page again, with what is missing.
    Row("POST", "/accounts/password/", by_role(302, 200, 200, 200, 200), "password_change"),
    # The Django admin is for staff accounts only: no role makes one staff.
    Row("GET", "/admin/", by_role(302, 302, 302, 302, 302), "admin:index"),
    Row(
        "GET",
        "/admin/annotation/candidate/",
        by_role(302, 302, 302, 302, 302),
        "admin:annotation_candidate_changelist",
    ),
    # The audit trail and the change history: staff only, like the rest of the admin site.
    Row(
        "GET",
        "/admin/annotation/auditevent/",
        by_role(302, 302, 302, 302, 302),
        "admin:annotation_auditevent_changelist",
    ),
    Row(
        "GET",
        "/admin/auditlog/logentry/",
        by_role(302, 302, 302, 302, 302),
        "admin:auditlog_logentry_changelist",
    ),
    # --- review screens -------------------------------------------------------------------
    Row("GET", "/review/", READER_SCREEN, "review_queue"),
    Row("GET", "/review/s/{review}/next", by_role(302, 302, 403, 403, 403), "review_next"),
    Row(
        "GET",
        "/review/s/{review}/adjudicate",
        by_role(302, 403, 200, 403, 403),
        "review_adjudicate_next",
    ),
    Row("GET", "/review/t/{mine}/", by_role(302, 200, REFUSED, 403, 403), "review_task"),
    Row("GET", "/review/t/{other}/", by_role(302, REFUSED, REFUSED, 403, 403), "review_task"),
    # Senior MDs draw in their own adjudications; another reader's case is not theirs.
    Row("GET", "/review/t/{mine}/draw", by_role(302, 200, REFUSED, 403, 403), "review_draw"),
    Row("GET", "/review/t/{mine}/progress", MY_CASE_SCREEN, "review_progress"),
    Row("GET", "/review/t/{other}/progress", OTHERS_CASE_SCREEN, "review_progress"),
    Row("GET", "/review/i/{mine}.png", MY_CASE_SCREEN, "review_image"),
    # Only an adjudication has a readers' consensus: a reader's case has none.
    Row("GET", "/review/c/{mine}.png", by_role(302, 404, 404, 403, 403), "review_consensus"),
    Row("GET", "/review/i/{other}.png", OTHERS_CASE_SCREEN, "review_image"),
    Row("GET", "/review/m/{mine_mask}.png", MY_CASE_SCREEN, "review_mask"),
    Row("GET", "/review/m/{other_mask}.png", OTHERS_CASE_SCREEN, "review_mask"),
    Row("POST", "/review/t/no-such-task/pick", READER_ACTION, "review_pick"),
    Row("POST", "/review/t/{other}/pick", READER_ACTION, "review_pick", PICK),
    Row("POST", "/review/t/no-such-task/round", MD_ACTION, "review_round"),
    Row("POST", "/review/s/{review}/undo", MD_ACTION, "review_undo"),
    Row("GET", "/review/s/{review}/undo", MD_SCREEN, "review_undo"),
    Row("POST", "/review/t/no-such-task/round/undo", MD_ACTION, "review_round_undo"),
    Row("POST", "/review/t/{other}/round/undo", MD_ACTION, "review_round_undo", {"number": 1}),
    Row("GET", "/review/signed-in", READER_SCREEN, "review_signed_in"),
    Row("GET", "/review/s/{review}/cases", READER_SCREEN, "review_cases"),
    Row("POST", "/review/t/{other}/reopen", MD_ACTION, "review_reopen", {"decision": KEY}),
    Row("POST", "/review/t/{other}/flag", READER_ACTION, "review_flag", FLAG),
    Row("POST", "/review/t/{other}/skip", READER_ACTION, "review_skip", FLAG),
    # --- statistics, exports --------------------------------------------------------------
    Row("GET", "/stats/", RESEARCH_SCREEN, "stats_index"),
    Row("GET", "/stats/s/{stage}/", RESEARCH_SCREEN, "stats_stage"),
    Row("GET", "/stats/s/{stage}/readers.csv", RESEARCH_SCREEN, "stats_stage_csv"),
    Row("GET", "/exports/", RESEARCH_SCREEN, "exports"),
    Row("POST", "/exports/", by_role(302, 403, 403, 400, 400), "exports"),  # empty form
    Row("GET", "/exports/{export}/row", RESEARCH_SCREEN, "export_row"),
    Row("GET", "/exports/{export}/download", RESEARCH_SCREEN, "export_download"),
    # --- admin dashboard ------------------------------------------------------------------
    Row("GET", "/dashboard/", ADMIN_SCREEN, "dashboard"),
    Row("GET", "/dashboard/upload", ADMIN_SCREEN, "dashboard_upload"),
    Row("GET", "/dashboard/datasets/{dataset}/stages/new", ADMIN_SCREEN, "dashboard_stage_new"),
    Row("GET", "/dashboard/stages/{stage}/", ADMIN_SCREEN, "dashboard_stage"),
    Row("POST", "/dashboard/stages/{stage}/launch", ADMIN_ACTION, "dashboard_stage_launch"),
    Row("POST", "/dashboard/stages/{stage}/cancel", ADMIN_ACTION, "dashboard_stage_cancel"),
    Row(
        "POST",
        "/dashboard/stages/{stage}/interactive",
        ADMIN_ACTION,
        "dashboard_stage_interactive",
    ),
    Row("GET", "/dashboard/flags", ADMIN_SCREEN, "dashboard_flags"),
    Row("POST", "/dashboard/flags/{flag}/resolve", ADMIN_ACTION, "dashboard_flag_resolve"),
    Row("GET", "/dashboard/jobs/{job}/", ADMIN_SCREEN, "dashboard_job"),
    Row("POST", "/dashboard/jobs/{job}/retry", ADMIN_ACTION, "dashboard_job_action"),
    # --- detector runs and the infection-map viewer ---------------------------------------
    Row("GET", "/detector/", RESEARCH_SCREEN, "detector_index"),
    Row("GET", "/detector/datasets/{dataset}/new", ADMIN_SCREEN, "detector_new"),
    Row("GET", "/detector/runs/{run}/", RESEARCH_SCREEN, "detector_report"),
    Row("GET", "/detector/runs/{run}/report.csv", RESEARCH_SCREEN, "detector_report_csv"),
    Row("GET", "/detector/runs/{run}/report.html", RESEARCH_SCREEN, "detector_report_html"),
    # The run has one network: nothing to combine, refused with a message.
    Row("POST", "/detector/runs/{run}/ensemble", ADMIN_ACTION, "detector_ensemble"),
    Row("GET", "/viewer/", RESEARCH_SCREEN, "viewer_upload"),
    Row("GET", "/viewer/jobs/{upload}/", RESEARCH_SCREEN, "viewer_job"),
    Row("GET", "/viewer/jobs/{admin_upload}/", by_role(302, 403, 403, 200, 404), "viewer_job"),
    Row("GET", "/viewer/jobs/{upload}/map.png", RESEARCH_SCREEN, "viewer_image"),
    Row(
        "GET",
        "/viewer/jobs/{admin_upload}/map.png",
        by_role(302, 403, 403, 200, 404),
        "viewer_image",
    ),
    Row("GET", "/viewer/datasets/{dataset}/", RESEARCH_SCREEN, "viewer_cases"),
    # The case browser names every mask's source: never for readers, no detector needed.
    Row("GET", "/cases/{radiograph}/", RESEARCH_SCREEN, "case_detail"),
    Row("GET", "/cases/{radiograph}/image.png", RESEARCH_SCREEN, "case_image"),
    Row("GET", "/cases/masks/{mask}.png", RESEARCH_SCREEN, "case_mask"),
    # No detector is deployed yet: the case page says so.
    Row("GET", "/viewer/cases/{radiograph}/", by_role(302, 403, 403, 409, 409), "viewer_case"),
    Row(
        "POST",
        "/viewer/cases/{radiograph}/retry",
        by_role(302, 403, 403, 302, 302),
        "viewer_case_retry",
    ),
    # --- writes that change what the rows above see: last ----------------------------------
    Row("POST", "/detector/models/{model}/deploy", ADMIN_ACTION, "detector_deploy"),
    # The dashboard row above queued a click-to-refine training: a second one is refused.
    Row("POST", "/api/stages/{stage}/interactive/", API_ADMIN_CONFLICT, "api:stage-interactive"),
    Row(
        "POST",
        "/api/review/tasks/{mine}/ahead/",
        by_role(401, 200, 403, 403, 403),
        "api:review-ahead",
    ),
    Row(
        "POST",
        "/api/review/tasks/{mine}/pick/",
        by_role(401, 201, 404, 403, 403),
        "api:review-pick",
        PICK,
    ),
    Row(
        "POST",
        "/api/review/tasks/{mine}/flag/",
        by_role(401, 201, 404, 403, 403),
        "api:review-flag",
        {**FLAG, "idempotency_key": "matrix-flag-0001"},
    ),
    # Revokes the token the API rows above used.
    Row("DELETE", "/api/auth/token/", by_role(401, 204, 204, 204, 204), "api:token"),
    Row("POST", "/accounts/logout/", by_role(302, 302, 302, 302, 302), "logout"),
]


@pytest.fixture
def world(tmp_path, broker):
    # Nothing here reaches a broker: queued jobs stay rows.
    return build_world(tmp_path)


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


def _value(value, ids: dict):
    if not isinstance(value, str):
        return value
    if value.startswith("{") and value.endswith("}") and value[1:-1] in ids:
        found = ids[value[1:-1]]  # a whole placeholder keeps its type: an id, or a file
        return io.BytesIO(found) if isinstance(found, bytes) else found
    return value.format(**ids)


def call(client: Client, row: Row, ids: dict) -> int:
    path = row.path.format(**ids)
    data = {k: _value(v, ids) for k, v in row.data.items()}
    if row.method == "GET":
        return client.get(path).status_code
    handler = getattr(client, row.method.lower())
    if path.startswith("/api/") and not row.form:  # the API takes JSON bodies
        return handler(path, json.dumps(data), content_type="application/json").status_code
    return handler(path, data).status_code


def _matches(got: int, expected: int | str) -> bool:
    if expected == REFUSED:
        return 300 <= got < 500
    if expected == HEALTH:
        return got in (200, 503)
    return got == expected


@pytest.mark.parametrize("role", ROLES)
def test_each_role_gets_what_the_matrix_says(world, role):
    accounts, ids = world
    wrong = []
    for row in MATRIX:
        client = client_as(role, accounts, api=row.path.startswith("/api/"))
        got, expected = call(client, row, ids), row.expect[role]
        if not _matches(got, expected):
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
    # The Django admin's own pages are many and alike: its index and one list stand for them.
    watched = {n for n in routes if not n.startswith("admin:")} | {"admin:index"}
    missing = sorted(watched - covered)
    assert not missing, f"add rows to MATRIX for: {', '.join(missing)}"
    unknown = sorted(covered - routes)
    assert not unknown, f"rows name routes that do not exist: {', '.join(unknown)}"


@pytest.mark.parametrize("role", [ADMIN, RESEARCHER])
def test_researchers_and_admins_cannot_decide_on_a_real_task(world, role):
    accounts, ids = world
    task = ReviewTask.objects.get(token=ids["mine"])
    screens = client_as(role, accounts, api=False)
    for action in ("pick", "round"):
        answer = screens.post(
            f"/review/t/{task.token}/{action}",
            {"position": 1, "idempotency_key": f"k-{role}-{action}"},
        )
        assert answer.status_code == 403, action
    api = client_as(role, accounts, api=True)
    body = {"position": 1, "number": 1, "choice": "A", "idempotency_key": f"k-{role}-api"}
    for action in ("pick", "round", "drawing", "keep", "ahead"):
        answer = api.post(f"/api/review/tasks/{task.token}/{action}/", body)
        assert answer.status_code == 403, action
    assert not Decision.objects.filter(task=task).exists()
    task.refresh_from_db()
    assert task.status == "leased" and task.reader == accounts[MD]


def test_an_md_never_decides_another_mds_case(world):
    accounts, ids = world
    other = ReviewTask.objects.get(token=ids["other"])
    api = client_as(MD, accounts, api=True)
    answer = api.post(
        f"/api/review/tasks/{other.token}/pick/",
        json.dumps({"position": 1, "idempotency_key": "k-md-other"}),
        content_type="application/json",
    )
    assert answer.status_code == 404
    screens = client_as(MD, accounts, api=False)
    screens.post(
        f"/review/t/{other.token}/pick", {"position": 1, "idempotency_key": "k-md-other-2"}
    )
    assert not Decision.objects.filter(task=other).exists()
