"""A reader's own cases (reopen one while it is not final), and flagging or skipping the case
on a review screen. The forms work without JavaScript (cm-flag.js sends the same through the
review API): each answer is a redirect, with a message, to the page that follows."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from annotation.models import Decision, Stage
from annotation.roles import MD, READER_ROLES, ROLE_CONFLICT, sees_provenance
from annotation.selectors.review import next_page, task_page
from annotation.selectors.worklist import reader_stages, reader_worklist
from annotation.services.assignment import task_held
from annotation.services.audit import client_ip
from annotation.services.flags import case_flag
from annotation.services.review import decision_reopen
from annotation.services.review_errors import NotYourTask, ReviewError
from annotation.views.access import role_required


def _refused(request: HttpRequest) -> HttpResponse | None:
    if sees_provenance(request.user):
        return render(request, "review/cases.html", {"role_conflict": ROLE_CONFLICT}, status=403)
    return None


@require_GET
@role_required(*READER_ROLES)
def cases(request: HttpRequest, stage_id: int) -> HttpResponse:
    stage = get_object_or_404(Stage.objects.select_related("dataset"), pk=stage_id)
    refused = _refused(request)
    if refused is not None:
        return refused
    ctx = {
        "stage": stage,
        "rows": reader_worklist(stage=stage, reader=request.user),
        "stages": reader_stages(reader=request.user),
    }
    return render(request, "review/cases.html", ctx)


def _worklist(task) -> HttpResponse:
    return redirect("review_cases", stage_id=task.stage_id)


@require_POST
@role_required(MD)
def reopen_submit(request: HttpRequest, token: str) -> HttpResponse:
    try:
        task = task_held(token=token, reader=request.user)
    except ReviewError as exc:
        messages.error(request, str(exc))
        return redirect("review_queue")
    decision = Decision.objects.filter(
        task=task, reader=request.user, idempotency_key=request.POST.get("decision", "")
    ).first()
    try:
        if decision is None:
            raise NotYourTask("this decision is not one of yours to reopen")
        result = decision_reopen(
            decision=decision, reader=request.user, client_ip=client_ip(request)
        )
    except ReviewError as exc:
        messages.error(request, str(exc))
        return _worklist(task)
    messages.info(request, "The case is open again: choose again.")
    return redirect(task_page(result.task))


def _flag(request: HttpRequest, token: str, *, skip: bool) -> HttpResponse:
    try:
        result = case_flag(
            token=token,
            reader=request.user,
            reason=request.POST.get("reason", ""),
            comment=request.POST.get("comment", ""),
            idempotency_key=request.POST.get("idempotency_key", ""),
            skip=skip,
            client_ip=client_ip(request),
        )
    except NotYourTask as exc:
        messages.error(request, str(exc))
        return redirect("review_queue")
    except ReviewError as exc:
        messages.error(request, str(exc))
        return redirect("review_task", token=token)
    if skip:
        messages.info(request, "Case skipped: it goes to another reader. Here is your next case.")
        return redirect(next_page(task=result.task, reader=request.user))
    messages.info(request, f"Case flagged for an admin ({result.flag.get_reason_display()}).")
    return redirect(task_page(result.task))


@require_POST
@role_required(*READER_ROLES)
def flag_submit(request: HttpRequest, token: str) -> HttpResponse:
    return _flag(request, token, skip=False)


@require_POST
@role_required(*READER_ROLES)
def skip_submit(request: HttpRequest, token: str) -> HttpResponse:
    return _flag(request, token, skip=True)
