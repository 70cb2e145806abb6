"""The review screens: queue, pairwise, N-way (and adjudication), drawing.

Views are thin: parse, call one service or selector, render. The screens' JavaScript (review.js,
cm-draft.js) does every action through the review API (annotation/api/views_review.py), the one
JSON protocol. The choice forms (pick, pairwise round, undo) also post here, so a reader
without JavaScript can still decide: the answer is a redirect to the page that follows, with
any refusal said as a message. Conflicts (a second tab, a lost lease) are not errors for the
reader: they get a message and the screen they should be on.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from annotation.models import ReviewTask, Stage
from annotation.roles import (
    MD,
    READER_ROLES,
    ROLE_CONFLICT,
    SENIOR_MD,
    has_role,
    sees_provenance,
)
from annotation.selectors.review import (
    decided_case,
    inline_overlays,
    next_page,
    reader_decision,
    reader_last_decision,
    reader_queue,
    refusal_page,
    result_page,
    stage_page,
    task_mask_urls,
    task_page,
    task_screen,
)
from annotation.services.assignment import task_held, task_lease_next, task_lease_renew
from annotation.services.audit import client_ip
from annotation.services.interactive import interactive_model_current
from annotation.services.review import (
    ReviewResult,
    decision_undo,
    pick_record,
    round_record,
    round_undo,
)
from annotation.services.review_errors import MalformedRequest, ReviewError
from annotation.views.access import redirect_back, role_required


def _int(value, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise MalformedRequest(f"{name} must be a whole number, not {value!r}") from None


@require_GET
@role_required(*READER_ROLES)
def queue(request: HttpRequest) -> HttpResponse:
    # The queue refreshes itself every 30 s (htmx): then only the table is sent.
    template = "review/queue.html#queue" if request.htmx else "review/queue.html"
    if sees_provenance(request.user):
        # Not an empty queue: the reader must know why they get no case.
        return render(request, template, {"role_conflict": ROLE_CONFLICT}, status=403)
    ctx = {
        "rows": reader_queue(reader=request.user) if has_role(request.user, MD) else [],
        "adjudication": (
            reader_queue(reader=request.user, kind=ReviewTask.Kind.ADJUDICATION)
            if has_role(request.user, SENIOR_MD)
            else []
        ),
    }
    return render(request, template, ctx)


def _lease_and_go(request: HttpRequest, stage_id: int, kind: str) -> HttpResponse:
    stage = get_object_or_404(Stage, pk=stage_id)
    if stage.status == Stage.Status.CLOSED:
        # The last accepted case closed it: the reader ends here, not on an error.
        return render(request, "review/empty.html", {"stage": stage, "kind": kind, "closed": True})
    try:
        task = task_lease_next(stage=stage, reader=request.user, kind=kind)
    except ReviewError as exc:
        messages.info(request, str(exc))
        return redirect("review_queue")
    if task is None:
        return render(request, "review/empty.html", {"stage": stage, "kind": kind})
    return redirect(task_page(task))


@require_GET
@role_required(MD)
def next_task(request: HttpRequest, stage_id: int) -> HttpResponse:
    return _lease_and_go(request, stage_id, ReviewTask.Kind.REVIEW)


@require_GET
@role_required(SENIOR_MD)
def next_adjudication(request: HttpRequest, stage_id: int) -> HttpResponse:
    return _lease_and_go(request, stage_id, ReviewTask.Kind.ADJUDICATION)


@require_GET
@role_required(*READER_ROLES)
def progress(request: HttpRequest, token: str) -> HttpResponse:
    """The progress strip alone (htmx), refreshed when a prerendered screen is shown."""
    try:
        task = task_held(token=token, reader=request.user)
    except ReviewError:  # not theirs, or an account that may not review
        raise Http404("no such case") from None
    screen = task_screen(task=task, reader=request.user)
    return render(request, "review/_bar.html#progress", {"screen": screen, "task": task})


def _held_or_queue(request: HttpRequest, token: str) -> ReviewTask | None:
    try:
        return task_held(token=token, reader=request.user)
    except ReviewError as exc:  # not theirs (any more), or an account that may not review
        messages.info(request, str(exc))
        return None


@require_GET
@role_required(*READER_ROLES)
def task_view(request: HttpRequest, token: str) -> HttpResponse:
    task = _held_or_queue(request, token)
    if task is None:
        return redirect("review_queue")
    if task.status == ReviewTask.Status.DONE:
        return _decided_or_on(request, task)
    # Looking at the case keeps it: the lease runs from the last time it was opened.
    task_lease_renew(task=task, reader=request.user)
    screen = task_screen(task=task, reader=request.user)
    if screen.kind == "draw":
        return redirect("review_draw", token=task.token)
    # Every overlay of the task rendered now (the same cached path whichever mask), and the
    # shown ones carried in the page when they are small, as they usually are.
    inline = inline_overlays(screen)
    ctx = {
        "screen": screen,
        "task": task,
        "stage": task.stage,
        "key": uuid.uuid4(),
        # A pairwise case's later rounds: fetch their masks while the reader looks at this one
        # (not when the rounds' pages will carry them).
        "all_masks": task_mask_urls(task=task) if screen.kind == "pairwise" and not inline else [],
    }
    return render(
        request, "review/pairwise.html" if screen.kind == "pairwise" else "review/nway.html", ctx
    )


@require_GET
@role_required(*READER_ROLES)  # a senior MD draws in adjudication; the task must be theirs
def draw_view(request: HttpRequest, token: str) -> HttpResponse:
    task = _held_or_queue(request, token)
    if task is None:
        return redirect("review_queue")
    if task.status == ReviewTask.Status.DONE:
        return _decided_or_on(request, task)
    task_lease_renew(task=task, reader=request.user)
    screen = task_screen(task=task, reader=request.user)
    if screen.kind == "pairwise":
        # The knockout is still going: drawing comes after "neither".
        return redirect(task_page(task))
    base = None
    start = request.GET.get("from", "")
    if start.isdigit():
        base = next((p for p in screen.panes if p.position == int(start)), None)
    consensus = task.kind == ReviewTask.Kind.ADJUDICATION and len(screen.panes) >= 2
    if consensus and start == "consensus":
        # The STAPLE consensus of the readers' masks, as a start for the senior MD.
        base = {"consensus": True, "mask_url": reverse("review_consensus", args=[task.token])}
    ctx = {
        "screen": screen,
        "task": task,
        "stage": task.stage,
        "base": base,
        "consensus": consensus,
        "key": uuid.uuid4(),
        "radiograph": task.radiograph,
        "interactive_model": interactive_model_current(dataset_id=task.radiograph.dataset_id),
    }
    return render(request, "review/draw.html", ctx)


def _local(request: HttpRequest, url: str) -> str:
    """`url` if it is a page of this site (a link back), else empty."""
    ok = url.startswith("/") and url_has_allowed_host_and_scheme(
        url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    )
    return url if ok else ""


def _decided_or_on(request: HttpRequest, task: ReviewTask) -> HttpResponse:
    """A case the reader decided (the browser's Back button after a choice): their decision,
    read-only, with its undo while it is their last; else on to the stage's next case."""
    decision = reader_decision(task=task, reader=request.user)
    if decision is None or task.kind != ReviewTask.Kind.REVIEW:
        return redirect(stage_page(task.stage, task.kind))
    ctx = {
        "task": task,
        "stage": task.stage,
        "case": decided_case(decision=decision, reader=request.user),
        "next_url": next_page(task=task, reader=request.user),
    }
    return render(request, "review/decided.html", ctx)


def _form_action(
    request: HttpRequest, token: str, act: Callable[[ReviewTask], ReviewResult]
) -> HttpResponse:
    """A choice form posted without JavaScript: do it, then go to the page that follows; a
    refusal is said on the page it leaves the reader on (the case itself, if it names none)."""
    task = _held_or_queue(request, token)
    if task is None:
        return redirect("review_queue")
    try:
        result = act(task)
    except ReviewError as exc:
        messages.error(request, str(exc))
        return redirect(refusal_page(exc) or task_page(task))
    return redirect(result_page(result=result, reader=request.user))


@require_POST
@role_required(MD)
def round_submit(request: HttpRequest, token: str) -> HttpResponse:
    return _form_action(
        request,
        token,
        lambda task: round_record(
            task=task,
            reader=request.user,
            number=_int(request.POST.get("number"), "number"),
            choice=request.POST.get("choice", ""),
            idempotency_key=request.POST.get("idempotency_key", ""),
            time_on_screen_ms=_int(request.POST.get("time_on_screen_ms", 0), "time on screen"),
            client_ip=client_ip(request),
        ),
    )


@require_POST
@role_required(*READER_ROLES)
def pick_submit(request: HttpRequest, token: str) -> HttpResponse:
    return _form_action(
        request,
        token,
        lambda task: pick_record(
            task=task,
            reader=request.user,
            position=_int(request.POST.get("position"), "position"),
            idempotency_key=request.POST.get("idempotency_key", ""),
            time_on_screen_ms=_int(request.POST.get("time_on_screen_ms", 0), "time on screen"),
            client_ip=client_ip(request),
        ),
    )


@require_POST
@role_required(MD)
def round_undo_submit(request: HttpRequest, token: str) -> HttpResponse:
    return _form_action(
        request,
        token,
        lambda task: round_undo(
            task=task,
            reader=request.user,
            number=_int(request.POST.get("number"), "round"),
            client_ip=client_ip(request),
        ),
    )


@require_http_methods(["GET", "POST"])
@role_required(MD)
def undo_submit(request: HttpRequest, stage_id: int) -> HttpResponse:
    """GET: what "Undo last decision" would take back (case number, the chosen mask), to
    confirm; the screens' JavaScript shows its `confirm` fragment in a dialog. POST: undo it
    (with the decision's key, only that decision)."""
    stage = get_object_or_404(Stage, pk=stage_id)
    if request.method == "GET":
        last = reader_last_decision(stage=stage, reader=request.user)
        ctx = {
            "stage": stage,
            "case": decided_case(decision=last, reader=request.user) if last else None,
            "back": _local(request, request.GET.get("back", "")),
        }
        fragment = request.GET.get("fragment") == "1"
        return render(request, "review/undo.html#confirm" if fragment else "review/undo.html", ctx)
    key = request.POST.get("idempotency_key") or None
    try:
        result = decision_undo(
            stage=stage, reader=request.user, idempotency_key=key, client_ip=client_ip(request)
        )
    except ReviewError as exc:
        messages.error(request, str(exc))
        return redirect_back(request, request.POST.get("back"), "review_queue")
    messages.info(request, "Your last decision was undone: choose again.")
    return redirect(task_page(result.task))


@require_GET
@role_required(*READER_ROLES)
def signed_in(request: HttpRequest) -> HttpResponse:
    """Where "Sign in again" lands: review.js tells the screen left open in the other tab,
    which then sends what it kept (with its own key, so it is stored once)."""
    return render(request, "review/signed_in.html")
