"""Stage statistics: admins and researchers only (the page names every candidate's source)."""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from annotation.models import Stage
from annotation.roles import ADMIN, RESEARCHER, has_role
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
    from annotation.selectors.reader_analytics import reader_rows
    from annotation.selectors.statistics import (
        IDENTIFICATION_MIN_MASKS,
        stage_identification,
        stage_statistics,
    )
    from annotation.selectors.stats_export import STAGE_TABLES
    from annotation.selectors.stats_plots import stage_plots

    stats = stage_statistics(stage=get_object_or_404(Stage, pk=stage_id))
    ctx = {"stats": stats, "stage": stats.stage}
    if request.htmx:
        # The progress table refreshes itself while the stage is being reviewed.
        return render(request, "stats/stage.html#progress", ctx)
    ctx["plots"] = stage_plots(stats)
    ctx["readers"] = reader_rows(stage=stats.stage)
    # Researchers see pseudonyms only; admins, who manage the accounts, also the user names.
    ctx["show_names"] = has_role(request.user, ADMIN)
    ctx["tables"] = [*STAGE_TABLES, "readers"]
    ctx.update(disagreement_context(stage=stats.stage))
    # Outline features of every candidate: measured for the full page, not its refreshes.
    ctx["identification"] = stage_identification(stage=stats.stage)
    ctx["identification_min"] = IDENTIFICATION_MIN_MASKS
    return render(request, "stats/stage.html", ctx)


@require_GET
@role_required(ADMIN, RESEARCHER)
def stage_csv(request: HttpRequest, stage_id: int, table: str) -> HttpResponse:
    from annotation.selectors.reader_analytics import reader_rows
    from annotation.selectors.statistics import stage_statistics
    from annotation.selectors.stats_export import STAGE_TABLES, csv_text, readers_table

    stage_obj = get_object_or_404(Stage, pk=stage_id)
    if table == "readers":
        names = has_role(request.user, ADMIN)
        text = csv_text(readers_table(reader_rows(stage=stage_obj), names=names))
    elif table in STAGE_TABLES:
        text = csv_text(STAGE_TABLES[table](stage_statistics(stage=stage_obj)))
    else:
        raise Http404(f"no statistics table {table!r}")
    response = HttpResponse(text, content_type="text/csv; charset=utf-8")
    filename = f"stage-{stage_obj.number}-{table}.csv"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
