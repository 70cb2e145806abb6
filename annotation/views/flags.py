"""The admins' list of flagged and skipped cases, and marking a flag resolved."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET, require_POST

from annotation.models import CaseFlag
from annotation.roles import ADMIN
from annotation.selectors.worklist import open_flags, recent_resolved_flags
from annotation.services.audit import client_ip
from annotation.services.flags import flag_resolve
from annotation.views.access import redirect_back, role_required


@require_GET
@role_required(ADMIN)
def flags_page(request: HttpRequest) -> HttpResponse:
    ctx = {"flags": open_flags(), "resolved": recent_resolved_flags()}
    return render(request, "dashboard/flags.html", ctx)


@require_POST
@role_required(ADMIN)
def flag_resolve_view(request: HttpRequest, flag_id: int) -> HttpResponse:
    flag = get_object_or_404(CaseFlag, pk=flag_id)
    flag_resolve(flag=flag, by=request.user, client_ip=client_ip(request))
    messages.info(request, f"Flag on {flag.radiograph.name} resolved.")
    return redirect_back(request, request.POST.get("back"), "dashboard_flags")
