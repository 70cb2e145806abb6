"""The exports screen (researchers and admins): choose, start, follow, download.

One view serves the page; with htmx, a running export's row polls itself until its job ends.
Downloads go through `export_file`, which checks the role: export files are never served
from a public media URL.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from django import forms
from django.contrib import messages
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from annotation.models import Dataset, Export, Stage
from annotation.roles import ADMIN, RESEARCHER
from annotation.services.audit import client_ip
from annotation.services.exports import (
    FORMATS,
    MAX_FOLDS,
    ExportError,
    export_download,
    export_request,
)
from annotation.views.access import role_required

FORMAT_LABELS = {
    "qata": "QaTa-COV19 layout (Images/, Ground-truths/ masks 0/255)",
    "coco": "COCO instances JSON (RLE masks)",
    "manifest": "manifest.csv + manifest.json (provenance per case)",
}
SPLIT_LABELS = [
    ("none", "No split"),
    ("stored", "Train Set/ and Test Set/ (the cases' stored split)"),
    ("kfold", "k-fold split files (stratified by label, grouped by patient)"),
]


class ExportForm(forms.Form):
    dataset = forms.ModelChoiceField(queryset=Dataset.objects.order_by("name"))
    stages = forms.ModelMultipleChoiceField(
        queryset=Stage.objects.select_related("dataset").order_by("dataset__name", "number"),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: every stage of the dataset.",
    )
    include_imported = forms.BooleanField(
        required=False, initial=True, label="Include masks imported as final"
    )
    include_controls = forms.BooleanField(
        required=False, label="Include control cases (not COVID-19) with empty masks"
    )
    formats = forms.MultipleChoiceField(
        choices=[(f, FORMAT_LABELS[f]) for f in FORMATS],
        initial=list(FORMATS),
        widget=forms.CheckboxSelectMultiple,
    )
    split = forms.ChoiceField(choices=SPLIT_LABELS, initial="none", widget=forms.RadioSelect)
    folds = forms.IntegerField(min_value=2, max_value=MAX_FOLDS, initial=5)
    seed = forms.IntegerField(min_value=0, max_value=2**31 - 1, initial=0)
    licence = forms.CharField(required=False, max_length=500)
    citation = forms.CharField(
        required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2})
    )

    def clean(self):
        data = super().clean()
        dataset, stages = data.get("dataset"), data.get("stages")
        if dataset and stages:
            others = [s for s in stages if s.dataset_id != dataset.pk]
            if others:
                raise forms.ValidationError(
                    f"{others[0]} is not a stage of dataset {dataset.name!r}"
                )
        return data


@role_required(ADMIN, RESEARCHER)
@require_http_methods(["GET", "POST"])
def exports_page(request: HttpRequest) -> HttpResponse:
    form = ExportForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            export = export_request(
                dataset=data["dataset"],
                created_by=request.user,
                stages=[s.number for s in data["stages"]] or None,
                include_imported=data["include_imported"],
                include_controls=data["include_controls"],
                formats=data["formats"],
                split=data["split"],
                folds=data["folds"],
                seed=data["seed"],
                licence=data["licence"],
                citation=data["citation"],
                client_ip=client_ip(request),
            )
        except ExportError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Export #{export.pk} started.")
            return redirect("exports")
    exports = [
        _with_error_line(e)
        for e in Export.objects.select_related("dataset", "job", "created_by")[:100]
    ]
    status = 400 if request.method == "POST" else 200
    return render(request, "exports/index.html", {"form": form, "exports": exports}, status=status)


@role_required(ADMIN, RESEARCHER)
@require_GET
def export_row(request: HttpRequest, pk: int) -> HttpResponse:
    """One export's row: what the progress bar polls."""
    export = get_object_or_404(Export.objects.select_related("dataset", "job", "created_by"), pk=pk)
    return render(request, "exports/index.html#row", {"export": _with_error_line(export)})


def _with_error_line(export: Export) -> Export:
    # The job keeps the whole traceback for admins; the page shows what went wrong.
    lines = export.job.error.strip().splitlines()
    export.error_line = lines[-1] if lines else ""
    return export


@role_required(ADMIN, RESEARCHER)
@require_GET
def export_file(request: HttpRequest, pk: int) -> FileResponse:
    export = get_object_or_404(Export, pk=pk)
    try:
        handle = export_download(export=export, by=request.user, client_ip=client_ip(request))
    except ExportError:
        raise Http404("this export is not ready") from None
    return FileResponse(
        handle,
        as_attachment=True,
        filename=PurePosixPath(export.file.name).name,
        content_type="application/zip",
    )
