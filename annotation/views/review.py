"""The review screens: queue, pairwise, N-way (and adjudication), drawing, undo.

Views are thin: parse, call one service, render. Choice forms post normally (they work without
JavaScript) and answer with a redirect to the next screen; review.js posts them with fetch and
`Accept: application/json` to retry on network errors with the same request key, and gets
{"redirect": url} back. Conflicts (a second tab, a lost lease) are not errors for the reader:
they get a message and the screen they should be on.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from annotation.models import ReviewTask, Stage
from annotation.roles import MD, SENIOR_MD, has_role
from annotation.selectors.review import (
    candidate_by_token,
    reader_queue,
    task_mask_urls,
    task_overlays_warm,
    task_screen,
)
from annotation.services.assignment import task_held, task_lease_next, task_lease_renew
from annotation.services.consensus import pick_record
from annotation.services.decisions import decision_record_drawing, decision_undo
from annotation.services.review import round_record
from annotation.services.review_errors import (
    InvalidChoice,
    NotYourTask,
    ReviewError,
    RoundAlreadyRecorded,
    TaskAlreadyDecided,
)
from annotation.views.access import role_required

READER_ROLES = (MD, SENIOR_MD)


def _wants_json(request: HttpRequest) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def _go(request: HttpRequest, url: str, *, status: int = 200, message: str = ""):
    """Send the reader on: JSON for review.js (which shows the message on the next screen,
    even one the browser fetched ahead), a redirect with a flash message for a plain form."""
    if _wants_json(request):
        return JsonResponse({"redirect": url, "message": message}, status=status)
    if message:
        messages.info(request, message)
    return redirect(url)


def _refuse(request: HttpRequest, error: ReviewError, back: str):
    """Bad input: say what is wrong; nothing changed."""
    if _wants_json(request):
        return JsonResponse({"error": str(error)}, status=error.status)
    messages.error(request, str(error))
    return redirect(back)


def _next_url(stage: Stage, kind: str) -> str:
    name = "review_adjudicate_next" if kind == ReviewTask.Kind.ADJUDICATION else "review_next"
    return reverse(name, kwargs={"stage_id": stage.pk})


def _after_decision(request: HttpRequest, task: ReviewTask) -> str:
    """The next screen's own URL (the case leased ahead), saving the reader a redirect."""
    try:
        nxt = task_lease_next(stage=task.stage, reader=request.user, kind=task.kind)
    except ReviewError:
        nxt = None
    return _screen_url(nxt) if nxt is not None else _next_url(task.stage, task.kind)


def _screen_url(task: ReviewTask) -> str:
    return reverse("review_task", kwargs={"token": task.token})


def _int(value, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InvalidChoice(f"{name} must be a whole number, not {value!r}") from None


@require_GET
@role_required(*READER_ROLES)
def queue(request: HttpRequest) -> HttpResponse:
    ctx = {
        "rows": reader_queue(reader=request.user) if has_role(request.user, MD) else [],
        "adjudication": (
            reader_queue(reader=request.user, kind=ReviewTask.Kind.ADJUDICATION)
            if has_role(request.user, SENIOR_MD)
            else []
        ),
    }
    template = "review/queue.html#queue" if request.htmx else "review/queue.html"
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
    return redirect(_screen_url(task))


@require_GET
@role_required(MD)
def next_task(request: HttpRequest, stage_id: int) -> HttpResponse:
    return _lease_and_go(request, stage_id, ReviewTask.Kind.REVIEW)


@require_GET
@role_required(SENIOR_MD)
def next_adjudication(request: HttpRequest, stage_id: int) -> HttpResponse:
    return _lease_and_go(request, stage_id, ReviewTask.Kind.ADJUDICATION)


@require_GET
@role_required(MD)
def ahead(request: HttpRequest, token: str) -> JsonResponse:
    """The reader's next case, leased ahead, so the browser can prerender its screen while the
    reader looks at this one. review.js asks once the screen is in use (never a prerender)."""
    try:
        task = task_held(token=token, reader=request.user)
    except NotYourTask:
        raise Http404("no such case") from None
    if task.kind != ReviewTask.Kind.REVIEW or not task.stage.config.get("prefetch", True):
        return JsonResponse({"url": None, "prefetch": []})
    try:
        nxt = task_lease_next(stage=task.stage, reader=request.user, skip=task.pk)
    except ReviewError:
        nxt = None
    if nxt is None:
        return JsonResponse({"url": None, "prefetch": []})
    screen = task_screen(task=nxt, reader=request.user, progress=False)
    images = [screen.image_url, *(p.mask_url for p in screen.panes)]
    return JsonResponse({"url": _screen_url(nxt), "prefetch": images})


LEASE_LOST = (
    "This case is no longer yours to decide: its lease ran out while you were away and it went "
    "back to the pool. Your queue has your next case."
)


def _lease_lost() -> JsonResponse:
    return JsonResponse({"error": LEASE_LOST, "redirect": reverse("review_queue")}, status=409)


@require_POST
@role_required(*READER_ROLES)
def keep(request: HttpRequest, token: str) -> JsonResponse:
    """Keep the case while the reader is still at its screen.

    review.js posts here while the reader is active (the lease otherwise runs from the time the
    screen was opened). 200 with the new expiry; 409, with where to go, once the case is no
    longer theirs to decide, so the screen says so before the reader makes a choice.
    """
    try:
        task = task_held(token=token, reader=request.user)
    except NotYourTask:
        return _lease_lost()
    if task.status == ReviewTask.Status.DONE:
        return JsonResponse(
            {
                "error": "This case is already decided.",
                "redirect": _next_url(task.stage, task.kind),
            },
            status=409,
        )
    until = timezone.now() + timedelta(seconds=task.stage.lease_seconds)
    if not task_lease_renew(task=task, reader=request.user, until=until):
        return _lease_lost()
    return JsonResponse(
        {"lease_expires_at": until.isoformat(), "lease_seconds": task.stage.lease_seconds}
    )


@require_GET
@role_required(*READER_ROLES)
def progress(request: HttpRequest, token: str) -> HttpResponse:
    """The progress strip alone (htmx), refreshed when a prerendered screen is shown."""
    try:
        task = task_held(token=token, reader=request.user)
    except NotYourTask:
        raise Http404("no such case") from None
    screen = task_screen(task=task, reader=request.user)
    return render(request, "review/_bar.html#progress", {"screen": screen, "task": task})


@require_GET
@role_required(*READER_ROLES)
def task_view(request: HttpRequest, token: str) -> HttpResponse:
    try:
        task = task_held(token=token, reader=request.user)
    except NotYourTask as exc:
        messages.info(request, str(exc))
        return redirect("review_queue")
    if task.status == ReviewTask.Status.DONE:
        return redirect(_next_url(task.stage, task.kind))
    # Looking at the case keeps it: the lease runs from the last time it was opened.
    task_lease_renew(task=task, reader=request.user)
    screen = task_screen(task=task, reader=request.user)
    if screen.kind == "draw":
        return redirect("review_draw", token=task.token)
    # Render every overlay of the task now, so serving them takes the same (cached) path.
    task_overlays_warm(task=task)
    ctx = {
        "screen": screen,
        "task": task,
        "stage": task.stage,
        "key": uuid.uuid4(),
        # A pairwise case's later rounds: fetch their masks while the reader looks at this one.
        "all_masks": task_mask_urls(task=task) if screen.kind == "pairwise" else [],
    }
    name = "review/pairwise.html" if screen.kind == "pairwise" else "review/nway.html"
    return render(request, f"{name}#screen" if request.htmx else name, ctx)


@require_POST
@role_required(MD)
def round_submit(request: HttpRequest, token: str) -> HttpResponse:
    task = None
    try:
        task = task_held(token=token, reader=request.user)
        result = round_record(
            task=task,
            reader=request.user,
            number=_int(request.POST.get("number"), "number"),
            choice=request.POST.get("choice", ""),
            idempotency_key=request.POST.get("key", ""),
            time_on_screen_ms=_int(request.POST.get("ms", 0), "ms"),
        )
    except NotYourTask as exc:
        return _go(request, reverse("review_queue"), status=409, message=str(exc))
    except (RoundAlreadyRecorded, TaskAlreadyDecided) as exc:
        return _go(
            request,
            _screen_url(task),
            status=409,
            message=f"{exc}. Here is where this case stands now.",
        )
    except ReviewError as exc:
        return _refuse(request, exc, _screen_url(task) if task else reverse("review_queue"))
    if result.decision is not None:
        return _go(request, _after_decision(request, task))
    if result.state.neither:
        return _go(request, reverse("review_draw", kwargs={"token": task.token}))
    return _go(request, _screen_url(task))


@require_POST
@role_required(*READER_ROLES)
def pick_submit(request: HttpRequest, token: str) -> HttpResponse:
    task = None
    try:
        task = task_held(token=token, reader=request.user)
        pick_record(
            task=task,
            reader=request.user,
            position=_int(request.POST.get("position"), "position"),
            idempotency_key=request.POST.get("key", ""),
            time_on_screen_ms=_int(request.POST.get("ms", 0), "ms"),
        )
    except NotYourTask as exc:
        return _go(request, reverse("review_queue"), status=409, message=str(exc))
    except TaskAlreadyDecided as exc:
        return _go(
            request,
            _next_url(task.stage, task.kind),
            status=409,
            message=f"{exc} (in another tab?); your choice there was kept. Next case:",
        )
    except ReviewError as exc:
        return _refuse(request, exc, _screen_url(task) if task else reverse("review_queue"))
    return _go(request, _after_decision(request, task))


@require_GET
@role_required(MD)
def draw_view(request: HttpRequest, token: str) -> HttpResponse:
    try:
        task = task_held(token=token, reader=request.user)
    except NotYourTask as exc:
        messages.info(request, str(exc))
        return redirect("review_queue")
    if task.status == ReviewTask.Status.DONE or task.kind != ReviewTask.Kind.REVIEW:
        return redirect(_next_url(task.stage, task.kind))
    task_lease_renew(task=task, reader=request.user)
    screen = task_screen(task=task, reader=request.user)
    if screen.kind == "pairwise":
        # The knockout is still going: drawing comes after "neither".
        return redirect(_screen_url(task))
    base = None
    start = request.GET.get("from", "")
    if start.isdigit() and 1 <= int(start) <= len(screen.panes):
        base = screen.panes[int(start) - 1]
    ctx = {
        "screen": screen,
        "task": task,
        "stage": task.stage,
        "base": base,
        "key": uuid.uuid4(),
        "radiograph": task.radiograph,
    }
    return render(request, "review/draw.html#screen" if request.htmx else "review/draw.html", ctx)


@require_POST
@role_required(MD)
def draw_submit(request: HttpRequest, token: str) -> HttpResponse:
    task = None
    try:
        task = task_held(token=token, reader=request.user)
        upload = request.FILES.get("mask")
        if upload is None:
            raise InvalidChoice("no mask was sent (multipart field 'mask')")
        base = None
        outcome = request.POST.get("outcome", "drew")
        if outcome not in ("drew", "refined"):
            raise InvalidChoice("outcome must be 'drew' or 'refined'")
        if outcome == "refined":
            base = candidate_by_token(task=task, opaque=request.POST.get("candidate", ""))
            if base is None:
                raise InvalidChoice("the mask to refine is not one of this case's candidates")
        decision_record_drawing(
            task=task,
            reader=request.user,
            png=upload.read(),
            base=base,
            no_infection=request.POST.get("no_infection") == "1",
            idempotency_key=request.POST.get("key", ""),
            time_on_screen_ms=_int(request.POST.get("ms", 0), "ms"),
        )
    except NotYourTask as exc:
        return _go(request, reverse("review_queue"), status=409, message=str(exc))
    except TaskAlreadyDecided as exc:
        return _go(
            request,
            _next_url(task.stage, task.kind),
            status=409,
            message=f"{exc} (in another tab?); that decision was kept.",
        )
    except ReviewError as exc:
        back = reverse("review_draw", kwargs={"token": token}) if task else reverse("review_queue")
        return _refuse(request, exc, back)
    return _go(request, _after_decision(request, task), status=201)


@require_POST
@role_required(MD)
def undo_submit(request: HttpRequest, stage_id: int) -> HttpResponse:
    stage = get_object_or_404(Stage, pk=stage_id)
    try:
        task = decision_undo(stage=stage, reader=request.user)
    except ReviewError as exc:
        return _refuse(request, exc, request.POST.get("back") or reverse("review_queue"))
    return _go(request, _screen_url(task), message="Your last decision was undone: choose again.")
