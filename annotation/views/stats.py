"""Stage statistics: admins and researchers only (the page names every candidate's source)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from annotation.models import Stage
from annotation.roles import ADMIN, RESEARCHER
from annotation.views.access import role_required


@require_GET
@role_required(ADMIN, RESEARCHER)
def index(request: HttpRequest) -> HttpResponse:
    stages = Stage.objects.select_related("dataset").order_by("dataset__name", "number")
    return render(request, "stats/index.html", {"stages": stages})


@require_GET
@role_required(ADMIN, RESEARCHER)
def stage(request: HttpRequest, stage_id: int) -> HttpResponse:
    # numpy/scipy/matplotlib load on the first statistics page, not at web start.
    from annotation.selectors.disagreement import disagreement_context
    from annotation.selectors.statistics import stage_statistics
    from annotation.selectors.stats_plots import stage_plots

    stats = stage_statistics(stage=get_object_or_404(Stage, pk=stage_id))
    ctx = {"stats": stats, "stage": stats.stage}
    if request.htmx:
        # The progress table refreshes itself while the stage is being reviewed.
        return render(request, "stats/stage.html#progress", ctx)
    ctx["plots"] = stage_plots(stats)
    ctx.update(disagreement_context(stage=stats.stage))
    return render(request, "stats/stage.html", ctx)
