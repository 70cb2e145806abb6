"""A reader's worklist: flag a case, skip it (it goes to another reader, never back), reopen an
earlier decision while the case is not final; the admins' list of flags; the home page's
count of what waits for a reader."""

from __future__ import annotations

import re
import uuid

import pytest
from django.test import Client

from annotation.models import AuditEvent, CaseFlag, Decision, GroundTruth, ReviewTask, Stage
from annotation.roles import ADMIN, MD, SENIOR_MD
from annotation.selectors.review import reader_progress
from annotation.selectors.worklist import reader_waiting, reader_worklist
from annotation.services.assignment import task_lease_next
from annotation.services.flags import case_flag, flag_resolve
from annotation.services.review import (
    adjudication_record,
    decision_record,
    decision_reopen,
    decision_undo,
)
from annotation.services.review_errors import (
    CaseFinal,
    IdempotencyKeyReused,
    MalformedRequest,
    NotYourTask,
    ReviewError,
)
from tests.annotation.test_blinding import FORBIDDEN_WORDS, bump_ids
from tests.factories import UserFactory, review_stage

pytestmark = pytest.mark.django_db


def key() -> str:
    return str(uuid.uuid4())


def decide(stage: Stage, reader, position: int = 1) -> Decision:
    task = task_lease_next(stage=stage, reader=reader)
    return decision_record(
        task=task, reader=reader, position=position, idempotency_key=key()
    ).decision


def state_of(stage: Stage) -> list:
    """Everything a reopen or a refused action could change, to compare before and after."""
    return [
        sorted(ReviewTask.objects.filter(stage=stage).values_list("pk", "status", "reader_id")),
        sorted(Decision.objects.values_list("pk", "revoked_at")),
        sorted(GroundTruth.objects.values_list("pk", "mask_id")),
        CaseFlag.objects.count(),
    ]


# --- flags ----------------------------------------------------------------------------------


def test_a_flag_is_stored_with_its_reason_and_comment_and_the_case_stays_with_the_reader():
    stage = review_stage(n_cases=2)
    md = UserFactory(roles=[MD])
    task = task_lease_next(stage=stage, reader=md)
    result = case_flag(
        token=task.token,
        reader=md,
        reason="poor_quality",
        comment="  rotated, cut off at the base  ",
        idempotency_key=key(),
    )
    flag = CaseFlag.objects.get()
    assert (flag.reason, flag.comment, flag.skipped) == (
        "poor_quality",
        "rotated, cut off at the base",
        False,
    )
    assert (flag.stage, flag.radiograph_id, flag.task, flag.reader) == (
        stage,
        task.radiograph_id,
        task,
        md,
    )
    task.refresh_from_db()
    assert task.status == ReviewTask.Status.LEASED and task.reader == md
    assert result.task.token == task.token
    assert AuditEvent.objects.filter(action="case.flag", target_id=str(flag.pk)).exists()


@pytest.mark.parametrize(
    ("reason", "comment", "message"),
    [
        ("blurry", "", "reason must be one of"),
        ("", "", "reason must be one of"),
        ("other", "   ", "comment when the reason is 'other'"),
        ("unsure", "x" * 2001, "longer than 2000"),
    ],
)
def test_a_bad_reason_is_refused_with_a_clear_error_and_nothing_is_stored(reason, comment, message):
    stage = review_stage(n_cases=1)
    md = UserFactory(roles=[MD])
    task = task_lease_next(stage=stage, reader=md)
    before = state_of(stage)
    for skip in (False, True):
        with pytest.raises(MalformedRequest, match=message):
            case_flag(
                token=task.token,
                reader=md,
                reason=reason,
                comment=comment,
                idempotency_key=key(),
                skip=skip,
            )
    assert state_of(stage) == before
    assert (
        not CaseFlag.objects.exists()
        and not AuditEvent.objects.filter(action__startswith="case.").exists()
    )


def test_a_retried_flag_is_stored_once_and_a_key_cannot_name_two_things():
    stage = review_stage(n_cases=1)
    md = UserFactory(roles=[MD])
    task = task_lease_next(stage=stage, reader=md)
    k = key()
    first = case_flag(token=task.token, reader=md, reason="unsure", idempotency_key=k)
    again = case_flag(token=task.token, reader=md, reason="unsure", idempotency_key=k)
    assert again.replayed and again.flag.pk == first.flag.pk
    with pytest.raises(IdempotencyKeyReused):
        case_flag(token=task.token, reader=md, reason="unsure", idempotency_key=k, skip=True)
    assert CaseFlag.objects.count() == 1


def test_a_reader_cannot_flag_a_case_that_is_not_theirs():
    stage = review_stage(n_cases=2)
    md, other = UserFactory(roles=[MD]), UserFactory(roles=[MD])
    task = task_lease_next(stage=stage, reader=md)
    with pytest.raises(NotYourTask):
        case_flag(token=task.token, reader=other, reason="unsure", idempotency_key=key())
    assert not CaseFlag.objects.exists()


# --- skip -----------------------------------------------------------------------------------


def test_a_skipped_case_goes_to_another_reader_never_back_to_the_skipper():
    stage = review_stage(n_cases=2)
    md, other = UserFactory(roles=[MD]), UserFactory(roles=[MD])
    task = task_lease_next(stage=stage, reader=md)
    skipped_case, old_token = task.radiograph_id, task.token
    result = case_flag(
        token=task.token, reader=md, reason="not_covid", idempotency_key=key(), skip=True
    )
    assert result.flag.skipped
    task.refresh_from_db()
    # Back in the pool as a fresh task: not the skipper's, and none of what they saw.
    assert task.status == ReviewTask.Status.OPEN and task.reader is None
    assert task.token != old_token
    # The skipper gets their next case, never the skipped one.
    nxt = task_lease_next(stage=stage, reader=md)
    assert nxt is not None and nxt.radiograph_id != skipped_case
    decision_record(task=nxt, reader=md, position=1, idempotency_key=key())
    assert task_lease_next(stage=stage, reader=md) is None
    assert reader_progress(stage=stage, reader=md).remaining == 0
    # Another reader takes it, lets the lease run out: still never the skipper's.
    taken = task_lease_next(stage=stage, reader=other)
    assert taken.radiograph_id == skipped_case
    ReviewTask.objects.filter(pk=taken.pk).update(lease_expires_at="2000-01-01T00:00:00Z")
    assert task_lease_next(stage=stage, reader=md) is None
    # Their old link to it is dead.
    with pytest.raises(NotYourTask):
        case_flag(token=old_token, reader=md, reason="unsure", idempotency_key=key())
    assert AuditEvent.objects.filter(action="case.skip").count() == 1


def test_a_retried_skip_changes_nothing_more():
    stage = review_stage(n_cases=3)
    md = UserFactory(roles=[MD])
    task = task_lease_next(stage=stage, reader=md)
    k = key()
    case_flag(token=task.token, reader=md, reason="unsure", idempotency_key=k, skip=True)
    nxt = task_lease_next(stage=stage, reader=md)
    before = state_of(stage)
    again = case_flag(token=task.token, reader=md, reason="unsure", idempotency_key=k, skip=True)
    assert again.replayed and state_of(stage) == before
    assert task_lease_next(stage=stage, reader=md).pk == nxt.pk


def test_a_decided_case_cannot_be_skipped():
    stage = review_stage(n_cases=2)
    md = UserFactory(roles=[MD])
    decision = decide(stage, md)
    before = state_of(stage)
    with pytest.raises(ReviewError, match="already decided"):
        case_flag(
            token=decision.task.token, reader=md, reason="unsure", idempotency_key=key(), skip=True
        )
    assert state_of(stage) == before


# --- reopen ---------------------------------------------------------------------------------


def test_an_earlier_decision_is_reopened_while_the_case_is_not_final():
    stage = review_stage(n_cases=3)
    md = UserFactory(roles=[MD])
    first = decide(stage, md, position=1)
    second = decide(stage, md, position=2)
    assert GroundTruth.objects.filter(radiograph=first.task.radiograph).exists()
    result = decision_reopen(decision=first, reader=md)
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.revoked_at is not None and second.revoked_at is None
    assert result.task.pk == first.task_id and result.task.status == ReviewTask.Status.LEASED
    # The accepted mask of that case (and only that case) is withdrawn until it is decided again.
    assert not GroundTruth.objects.filter(radiograph=first.task.radiograph).exists()
    assert GroundTruth.objects.filter(radiograph=second.task.radiograph).exists()
    # The case is back with the reader: it is their next case.
    assert task_lease_next(stage=stage, reader=md).pk == first.task_id
    again = decision_record(task=result.task, reader=md, position=3, idempotency_key=key())
    assert (
        GroundTruth.objects.get(radiograph=first.task.radiograph).mask_id == again.decision.mask_id
    )
    assert [r.decision.pk for r in reader_worklist(stage=stage, reader=md)] == [
        second.pk,
        again.decision.pk,
    ]
    assert AuditEvent.objects.filter(action="decision.reopen", target_id=str(first.pk)).exists()


def test_a_retried_reopen_never_takes_back_the_decision_made_since():
    stage = review_stage(n_cases=2)
    md = UserFactory(roles=[MD])
    first = decide(stage, md)
    decision_reopen(decision=first, reader=md)
    assert decision_reopen(decision=first, reader=md).replayed
    redo = decision_record(
        task=ReviewTask.objects.get(pk=first.task_id), reader=md, position=2, idempotency_key=key()
    ).decision
    before = state_of(stage)
    with pytest.raises(ReviewError, match="already taken back"):
        decision_reopen(decision=first, reader=md)
    assert state_of(stage) == before and Decision.objects.get(pk=redo.pk).revoked_at is None


def test_reopen_is_refused_once_the_stage_is_closed():
    stage = review_stage(n_cases=2)
    md = UserFactory(roles=[MD])
    first = decide(stage, md)
    Stage.objects.filter(pk=stage.pk).update(status=Stage.Status.CLOSED)
    before = state_of(stage)
    with pytest.raises(CaseFinal, match="closed"):
        decision_reopen(decision=first, reader=md)
    assert state_of(stage) == before
    stage.refresh_from_db()
    assert [row.reopen for row in reader_worklist(stage=stage, reader=md)] == [False]


def _disagreement(stage: Stage):
    """Two readers of one case chose different candidates: an adjudication is open."""
    a, b = UserFactory(roles=[MD]), UserFactory(roles=[MD])
    first = decide(stage, a, position=1)
    task_b = task_lease_next(stage=stage, reader=b)
    position = next(p for p, c in enumerate(task_b.candidate_order, 1) if c != first.candidate_id)
    decision_record(task=task_b, reader=b, position=position, idempotency_key=key())
    return a, first


def test_reopen_is_refused_once_a_senior_md_adjudicated_the_case():
    stage = review_stage(n_cases=1, readers_per_case=2)
    a, first = _disagreement(stage)
    senior = UserFactory(roles=[SENIOR_MD])
    adjudication = task_lease_next(stage=stage, reader=senior, kind=ReviewTask.Kind.ADJUDICATION)
    adjudication_record(task=adjudication, reader=senior, position=1, idempotency_key=key())
    assert GroundTruth.objects.filter(radiograph=first.task.radiograph).exists()
    before = state_of(stage)
    with pytest.raises(CaseFinal, match="senior MD"):
        decision_reopen(decision=first, reader=a)
    assert state_of(stage) == before
    assert [(r.reopen, r.final) for r in reader_worklist(stage=stage, reader=a)] == [
        (False, "adjudicated")
    ]


def test_reopening_withdraws_an_adjudication_still_waiting():
    stage = review_stage(n_cases=1, readers_per_case=2)
    a, first = _disagreement(stage)
    adjudication = ReviewTask.objects.get(stage=stage, kind=ReviewTask.Kind.ADJUDICATION)
    assert adjudication.status == ReviewTask.Status.OPEN
    decision_reopen(decision=first, reader=a)
    adjudication.refresh_from_db()
    assert adjudication.status == ReviewTask.Status.CANCELLED
    senior = UserFactory(roles=[SENIOR_MD])
    assert task_lease_next(stage=stage, reader=senior, kind="adjudication") is None


def test_only_the_reader_may_reopen_their_decision():
    stage = review_stage(n_cases=2)
    md, other = UserFactory(roles=[MD]), UserFactory(roles=[MD])
    first = decide(stage, md)
    before = state_of(stage)
    with pytest.raises(NotYourTask):
        decision_reopen(decision=first, reader=other)
    assert state_of(stage) == before


def test_undo_still_takes_back_only_the_last_decision():
    stage = review_stage(n_cases=3)
    md = UserFactory(roles=[MD])
    first = decide(stage, md)
    second = decide(stage, md)
    assert decision_undo(stage=stage, reader=md).task.pk == second.task_id
    first.refresh_from_db()
    assert first.revoked_at is None
    assert AuditEvent.objects.filter(action="decision.undo", target_id=str(second.pk)).exists()


# --- pages ----------------------------------------------------------------------------------


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_worklist_shows_only_the_readers_own_cases_and_reopens_without_javascript():
    stage = review_stage(n_cases=3)
    md, other = UserFactory(roles=[MD]), UserFactory(roles=[MD])
    mine = decide(stage, md, position=2)
    theirs = decide(stage, other)
    page = _client(md).get(f"/review/s/{stage.pk}/cases")
    html = page.content.decode()
    assert page.status_code == 200
    assert mine.task.token in html and theirs.task.token not in html
    assert html.count("data-case=") == 1 and "Chose a candidate (mask 2)" in html
    assert "Reopen" in html
    # The thumbnail: the case and the reader's own mask, by opaque, access-checked names.
    client = _client(md)
    srcs = re.findall(r'src="(/review/[^"]+\.png)"', html)
    assert len(srcs) == 2
    for src in srcs:
        answer = client.get(src)
        assert answer.status_code == 200 and answer["Content-Type"] == "image/png"
    assert all(_client(other).get(src).status_code == 404 for src in srcs)
    # The plain form reopens the case and sends the reader to it.
    answer = client.post(f"/review/t/{mine.task.token}/reopen", {"decision": mine.idempotency_key})
    assert answer.status_code == 302 and answer["Location"] == f"/review/t/{mine.task.token}/"
    mine.refresh_from_db()
    assert mine.revoked_at is not None
    # Without the decision's key nothing is reopened.
    before = state_of(stage)
    client.post(f"/review/t/{theirs.task.token}/reopen", {"decision": theirs.idempotency_key})
    assert state_of(stage) == before


def test_flag_and_skip_forms_work_without_javascript():
    stage = review_stage(n_cases=3)
    md = UserFactory(roles=[MD])
    client = _client(md)
    first = client.get(f"/review/s/{stage.pk}/next")
    screen = client.get(first["Location"])
    html = screen.content.decode()
    token = first["Location"].rstrip("/").split("/")[-1]
    assert (
        f'action="/review/t/{token}/flag"' in html
        and f'formaction="/review/t/{token}/skip"' in html
    )
    flag_key = re.search(r'name="idempotency_key" value="(flag-[^"]+)"', html).group(1)
    flagged = client.post(
        f"/review/t/{token}/flag", {"reason": "unsure", "comment": "", "idempotency_key": flag_key}
    )
    assert flagged["Location"] == f"/review/t/{token}/"
    bad = client.post(f"/review/t/{token}/skip", {"reason": "", "idempotency_key": key()})
    assert bad["Location"] == f"/review/t/{token}/" and CaseFlag.objects.count() == 1
    skipped = client.post(
        f"/review/t/{token}/skip", {"reason": "poor_quality", "idempotency_key": key()}
    )
    assert skipped.status_code == 302 and token not in skipped["Location"]
    nxt = client.get(skipped["Location"])
    assert nxt.status_code == 302 and "/review/t/" in nxt["Location"]
    assert CaseFlag.objects.filter(skipped=True).count() == 1


def test_admins_see_the_flag_list_and_its_count_readers_never_do():
    stage = review_stage(n_cases=2)
    md = UserFactory(roles=[MD])
    task = task_lease_next(stage=stage, reader=md)
    case_flag(
        token=task.token, reader=md, reason="other", comment="a pacemaker", idempotency_key=key()
    )
    admin = UserFactory(roles=[ADMIN])
    page = _client(admin).get("/dashboard/flags")
    assert page.status_code == 200 and "a pacemaker" in page.content.decode()
    assert task.radiograph.name in page.content.decode()
    dashboard = _client(admin).get("/dashboard/").content.decode()
    assert 'data-open-flags="1"' in dashboard
    for role in (MD, SENIOR_MD):
        assert _client(UserFactory(roles=[role])).get("/dashboard/flags").status_code == 403
    flag = CaseFlag.objects.get()
    assert _client(md).post(f"/dashboard/flags/{flag.pk}/resolve").status_code == 403
    _client(admin).post(f"/dashboard/flags/{flag.pk}/resolve")
    flag.refresh_from_db()
    assert flag.resolved_by == admin
    assert flag_resolve(flag=flag, by=UserFactory(roles=[ADMIN])).resolved_by == admin
    assert 'data-open-flags="0"' in _client(admin).get("/dashboard/").content.decode()


def test_the_home_page_says_how_many_cases_wait_for_each_reader():
    stage = review_stage(n_cases=3)
    md = UserFactory(roles=[MD])
    decide(stage, md)
    html = _client(md).get("/").content.decode()
    row = re.search(rf'data-waiting-review="{stage.pk}">(.*?)</li>', html, re.S).group(1)
    assert re.findall(r"data-(?:waiting|done)-count>(\d+)<", row) == ["2", "1"]
    # A senior MD sees the adjudications waiting.
    stage2 = review_stage(n_cases=1, readers_per_case=2)
    _disagreement(stage2)
    senior = UserFactory(roles=[SENIOR_MD])
    waiting = reader_waiting(reader=senior)
    assert [(r.stage, r.remaining) for r in waiting.adjudication] == [(stage2, 1)]
    html = _client(senior).get("/").content.decode()
    assert f'data-waiting-adjudication="{stage2.pk}"' in html
    # An admin is not a reader: nothing waits for them.
    assert "data-waiting" not in _client(UserFactory(roles=[ADMIN])).get("/").content.decode()


def test_the_worklist_reveals_no_candidates_source():
    bump_ids(5310000)
    stage = review_stage(n_cases=3, n_networks=3)
    md = UserFactory(roles=[MD])
    for position in (1, 2, 3):
        decide(stage, md, position=position)
    from annotation.models import Candidate, Mask, ModelVersion, Radiograph

    secrets_ = {
        str(pk)
        for model in (Mask, ModelVersion, Candidate, Radiograph, Decision)
        for pk in model.objects.values_list("pk", flat=True)
    }
    secrets_ |= set(Radiograph.objects.values_list("name", flat=True))
    secrets_ |= set(Candidate.objects.values_list("token", flat=True))
    secrets_ |= {m.pixel_sha256 for m in Mask.objects.all()}
    client = _client(md)
    pages = [
        client.get(f"/review/s/{stage.pk}/cases").content.decode(),
        client.get(f"/api/review/stages/{stage.pk}/cases/").content.decode(),
        client.get("/").content.decode(),
    ]
    assert "Reopen" in pages[0] and '"reopen":true' in pages[1].replace(" ", "")
    for text in pages:
        found = FORBIDDEN_WORDS.search(text)
        assert not found, found.group(0)
        for secret in secrets_:
            assert secret not in text


def test_the_api_flags_skips_lists_and_reopens():
    stage = review_stage(n_cases=3)
    md = UserFactory(roles=[MD])
    client = _client(md)
    decided = decide(stage, md)
    task = task_lease_next(stage=stage, reader=md)
    body = {"reason": "unsure", "comment": "", "idempotency_key": key()}
    url = f"/api/review/tasks/{task.token}/flag/"
    first = client.post(url, body, content_type="application/json")
    assert first.status_code == 201 and first.json()["skipped"] is False
    assert first.json()["page_url"].endswith(f"/review/t/{task.token}/")
    again = client.post(url, body, content_type="application/json")
    assert again.status_code == 200 and again.json()["replayed"] is True
    bad = client.post(url, {**body, "reason": "blurry", "idempotency_key": key()},
                      content_type="application/json")  # fmt: skip
    assert bad.status_code == 400 and CaseFlag.objects.count() == 1
    skip = client.post(
        f"/api/review/tasks/{task.token}/skip/",
        {"reason": "poor_quality", "idempotency_key": key()},
        content_type="application/json",
    )
    assert skip.status_code == 201 and skip.json()["skipped"] is True
    assert f"/review/s/{stage.pk}/next" in skip.json()["page_url"]
    rows = client.get(f"/api/review/stages/{stage.pk}/cases/").json()
    assert [(r["case"], r["task"], r["reopen"]) for r in rows] == [(1, decided.task.token, True)]
    mask = client.get(rows[0]["mask_url"])
    assert mask.status_code == 200 and mask["Content-Type"] == "image/png"
    reopen = client.post(
        f"/api/review/tasks/{decided.task.token}/reopen/",
        {"idempotency_key": rows[0]["decision_key"]},
        content_type="application/json",
    )
    assert reopen.status_code == 200 and reopen.json()["kind"] == "nway"
    # Reopened: nothing decided any more, so no mask of the reader's to show.
    assert client.get(rows[0]["mask_url"]).status_code == 404
    assert client.get(f"/api/review/stages/{stage.pk}/cases/").json() == []
    wrong = client.post(
        f"/api/review/tasks/{decided.task.token}/reopen/",
        {"idempotency_key": key()},
        content_type="application/json",
    )
    assert wrong.status_code == 404
