"""The case browser (admins and researchers): a dataset's cases, filtered and paged, and each
case with its image, manual masks, candidates and accepted mask, with their provenance.

It needs no detector: the infection map of a case is one link away when one is deployed.
MDs never reach it: it names where every mask came from.
"""

from __future__ import annotations

from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from annotation import blinding
from annotation.models import Dataset, Label, ModelVersion, Radiograph, Split
from annotation.roles import ADMIN, RESEARCHER
from annotation.selectors.cases import (
    ACCEPTED_CHOICES,
    CaseFilters,
    case_detail,
    case_neighbours,
    case_rows,
    mask_of_dataset_case,
)
from annotation.views.access import role_required

CASES_PER_PAGE = 50
IMAGE_HEADERS = {"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"}


def _has_detector(dataset_id: int) -> bool:
    return ModelVersion.objects.filter(
        dataset_id=dataset_id, purpose=ModelVersion.Purpose.DETECTOR, deployed=True
    ).exists()


@require_GET
@role_required(ADMIN, RESEARCHER)
def case_list(request: HttpRequest, dataset_id: int) -> HttpResponse:
    dataset = get_object_or_404(Dataset, pk=dataset_id)
    filters = CaseFilters.from_query(request.GET, dataset)
    page = Paginator(case_rows(dataset=dataset, filters=filters), CASES_PER_PAGE).get_page(
        request.GET.get("page")
    )
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "dataset": dataset,
        "page": page,
        "filters": filters,
        "query": query.urlencode(),
        "splits": [("train", "Train"), ("test", "Test"), ("", "Unassigned")],
        "labels": Label.choices,
        "accepted_choices": ACCEPTED_CHOICES,
        "stages": dataset.stages.order_by("number"),
        "split_values": Split.values,
    }
    return render(request, "cases/list.html", context)


@require_GET
@role_required(ADMIN, RESEARCHER)
def case_page(request: HttpRequest, radiograph_id: int) -> HttpResponse:
    radiograph = get_object_or_404(Radiograph.objects.select_related("dataset"), pk=radiograph_id)
    previous_id, next_id = case_neighbours(radiograph=radiograph)
    context = {
        "radiograph": radiograph,
        "previous_id": previous_id,
        "next_id": next_id,
        "has_detector": _has_detector(radiograph.dataset_id),
        **case_detail(radiograph=radiograph),
    }
    return render(request, "cases/case.html", context)


@require_GET
@role_required(ADMIN, RESEARCHER)
def case_image(request: HttpRequest, radiograph_id: int) -> FileResponse:
    """The case's 8-bit display image at full resolution."""
    radiograph = get_object_or_404(Radiograph, pk=radiograph_id)
    response = FileResponse(radiograph.display.open("rb"), content_type="image/png")
    for name, value in IMAGE_HEADERS.items():
        response[name] = value
    return response


@require_GET
@role_required(ADMIN, RESEARCHER)
def case_mask(request: HttpRequest, mask_id: int) -> HttpResponse:
    """A mask as a transparent overlay at its case's working resolution."""
    mask = mask_of_dataset_case(mask_id)
    if mask is None:
        raise Http404("no such mask")
    response = HttpResponse(
        blinding.mask_overlay(mask, radiograph=mask.radiograph), content_type="image/png"
    )
    for name, value in IMAGE_HEADERS.items():
        response[name] = value
    return response
