"""The infection-map viewer (admins and researchers): any stored case, or a new upload,
through the deployed detector: CXR, infection map, Grad-CAM, verdict and severity.

The page never runs a network: it asks for an INFER job and polls it (htmx) until the CPU
worker has written the result. MDs do not use it: it names networks and model versions.
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from annotation.models import Dataset, Job, ModelVersion, Radiograph
from annotation.roles import ADMIN, RESEARCHER
from annotation.selectors.inference import (
    colour_bar,
    deployed_detectors,
    inference_image_path,
    inference_result,
    inference_visible_to,
    input_caveats,
    score_caveat,
)
from annotation.services.detector import DetectorError
from annotation.services.inference import (
    InferenceInputError,
    case_inference_request,
    inference_request,
)
from annotation.views.access import role_required
from mlworker.networks import network_label


class UploadForm(forms.Form):
    image = forms.FileField(label="Chest X-ray (PNG, JPEG or DICOM)")
    dataset = forms.ModelChoiceField(
        queryset=Dataset.objects.none(), required=False, label="Detector of dataset"
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        ids = [mv.dataset_id for mv in deployed_detectors()]
        self.fields["dataset"].queryset = Dataset.objects.filter(pk__in=ids)


def _models_of(result: dict) -> dict:
    found = ModelVersion.objects.in_bulk(
        [pk for pk in (result.get("model_version"), result.get("classifier")) if pk]
    )
    detector = found.get(result.get("model_version"))
    classifier = found.get(result.get("classifier"))
    return {
        "detector": detector,
        "detector_label": network_label(detector.arch, detector.encoder) if detector else "",
        "classifier": classifier,
    }


def _job_context(job: Job) -> dict:
    result = inference_result(job=job)
    context = {"job": job, "result": result, **_models_of(result), "colour_bar": colour_bar()}
    radiograph = None
    if result.get("radiograph"):
        radiograph = (
            Radiograph.objects.select_related("ground_truth")
            .filter(pk=result["radiograph"])
            .first()
        )
        context["radiograph"] = radiograph
    if "severity" in result:
        context["severity_percent"] = 100 * result["severity"]
    if result["state"] == Job.State.SUCCEEDED:
        if radiograph is not None:
            metadata, size = radiograph.metadata, (radiograph.width, radiograph.height)
            context["truth"] = getattr(radiograph, "ground_truth", None)
        else:
            metadata = job.params.get("metadata") or {}
            size = (job.params.get("width") or 0, job.params.get("height") or 0)
        context["input_caveats"] = input_caveats(metadata=metadata, width=size[0], height=size[1])
        context["score_caveat"] = score_caveat(result.get("max_prob"))
    return context


@role_required(ADMIN, RESEARCHER)
def upload(request: HttpRequest) -> HttpResponse:
    form = UploadForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        handle = form.cleaned_data["image"]
        try:
            job = inference_request(
                upload_bytes=handle.read(),
                filename=handle.name,
                user=request.user,
                dataset=form.cleaned_data.get("dataset"),
            )
        except (InferenceInputError, DetectorError) as exc:
            form.add_error(None, str(exc))
        else:
            return redirect("viewer_job", job_id=job.pk)
    status = 400 if request.method == "POST" else 200
    context = {"form": form, "detectors": deployed_detectors()}
    return render(request, "viewer/upload.html", context, status=status)


def _visible_job(request: HttpRequest, job_id: int) -> Job:
    job = get_object_or_404(Job, pk=job_id, kind=Job.Kind.INFER)
    if not inference_visible_to(job=job, user=request.user):
        raise Http404("no such result")
    return job


@role_required(ADMIN, RESEARCHER)
def job_view(request: HttpRequest, job_id: int) -> HttpResponse:
    """The result page of a job; with ?part=result just the result panel (polled by htmx
    from this page and from the case page)."""
    context = _job_context(_visible_job(request, job_id))
    if request.htmx and request.GET.get("part") == "result":
        return render(request, "viewer/_result.html", context)
    return render(request, "viewer/result.html", context)


@role_required(ADMIN, RESEARCHER)
def job_image(request: HttpRequest, job_id: int, name: str) -> FileResponse:
    job = _visible_job(request, job_id)
    path = inference_image_path(job=job, name=name)
    if path is None or not default_storage.exists(path):
        raise Http404("no such image")
    response = FileResponse(default_storage.open(path, "rb"), content_type="image/png")
    response["Cache-Control"] = "private, max-age=3600"
    return response


@role_required(ADMIN, RESEARCHER)
def case_view(request: HttpRequest, radiograph_id: int) -> HttpResponse:
    radiograph = get_object_or_404(Radiograph.objects.select_related("dataset"), pk=radiograph_id)
    try:
        job = case_inference_request(radiograph=radiograph, user=request.user)
    except DetectorError as exc:
        context = {"radiograph": radiograph, "error": str(exc)}
        return render(request, "viewer/case.html", context, status=409)
    context = _job_context(job)
    neighbours = list(
        Radiograph.objects.filter(dataset=radiograph.dataset)
        .order_by("name", "id")
        .values_list("id", flat=True)
    )
    at = neighbours.index(radiograph.pk)
    context["radiograph"] = radiograph
    context["previous_id"] = neighbours[at - 1] if at > 0 else None
    context["next_id"] = neighbours[at + 1] if at + 1 < len(neighbours) else None
    return render(request, "viewer/case.html", context)


@require_POST
@role_required(ADMIN, RESEARCHER)
def case_retry(request: HttpRequest, radiograph_id: int) -> HttpResponse:
    """Ask again after a failed map: the failed job stays on the job board as it was."""
    radiograph = get_object_or_404(Radiograph, pk=radiograph_id)
    try:
        case_inference_request(radiograph=radiograph, user=request.user, again=True)
    except DetectorError as exc:
        messages.error(request, str(exc))
    return redirect("viewer_case", radiograph_id=radiograph.pk)
