"""The admin dashboard: datasets, stages, the job board and the worker board (htmx)."""

from __future__ import annotations

import json

from django import forms
from django.conf import settings
from django.contrib import messages
from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from annotation.middleware import FORM_OVERHEAD, body_limit
from annotation.models import Dataset, Job, Label, Stage
from annotation.presets import COMBINED_CANDIDATES, MODES, PRESETS, REVIEW_DEFAULTS
from annotation.roles import ADMIN
from annotation.selectors.dashboard import (
    datasets_for_dashboard,
    job_board,
    job_result_tables,
    job_row,
    log_tail,
    stage_job_summary,
    worker_board,
)
from annotation.selectors.disagreement import disagreement_context
from annotation.selectors.worklist import open_flag_count
from annotation.services.audit import client_ip
from annotation.services.datasets import LICENCE_MAX_LENGTH, dataset_licence_set
from annotation.services.interactive import (
    InteractiveError,
    interactive_model_current,
    interactive_train_launch,
    interactive_training_set,
)
from annotation.services.jobs import JobStateError, job_cancel, job_retry
from annotation.services.stages import (
    StageError,
    stage_cancel,
    stage_create,
    stage_launch,
    stage_plan,
)
from annotation.services.uploads import UploadError, import_upload_request
from annotation.views.access import redirect_back, role_required
from mlworker.networks import network_choices, network_label

MODE_LABELS = {"pairwise": "Pairwise knockout (Stage I)", "nway": "N-way pick (Stage II and later)"}


class StageForm(forms.Form):
    preset = forms.ChoiceField(choices=[(p, p) for p in PRESETS], required=False)
    name = forms.CharField(required=False, max_length=200)
    mode = forms.ChoiceField(choices=[(m, MODE_LABELS[m]) for m in MODES])
    networks = forms.MultipleChoiceField(
        choices=network_choices(), widget=forms.CheckboxSelectMultiple
    )
    frozen = forms.BooleanField(required=False, label="Frozen encoder")
    epochs = forms.IntegerField(min_value=1, max_value=1000)
    batch_size = forms.IntegerField(min_value=1, max_value=512)
    image_size = forms.IntegerField(
        min_value=32, max_value=2048, help_text="pixels, a multiple of 32"
    )
    folds = forms.IntegerField(
        min_value=1, max_value=20, help_text="k-fold cross-validation (Stage I)"
    )
    readers_per_case = forms.IntegerField(min_value=1, max_value=10)
    learning_rate = forms.FloatField(min_value=1e-7, max_value=0.5)
    queue_order = forms.ChoiceField(
        choices=Stage.QueueOrder.choices,
        required=False,
        help_text="which cases readers get first; informative first: where the candidates "
        "disagree most",
    )
    auto_accept = forms.BooleanField(
        required=False,
        label="Accept cases whose candidates all agree without a reader",
    )
    agreement_threshold = forms.FloatField(
        min_value=0.5,
        max_value=1.0,
        required=False,
        help_text="the Dice every pair of candidates must reach to agree",
    )
    audit_share = forms.FloatField(
        min_value=0.0,
        max_value=1.0,
        required=False,
        help_text="share of agreeing cases sent to readers anyway, to measure the rule",
    )

    staple = forms.BooleanField(
        required=False, label="Add the STAPLE consensus of the networks' masks as a candidate"
    )
    ensemble = forms.BooleanField(
        required=False, label="Add the networks' ensemble (mean probability) as a candidate"
    )

    REVIEW_KEYS = ("queue_order", "auto_accept", "agreement_threshold", "audit_share")
    CHECKBOXES = ("frozen", "normalise_outlines", "auto_accept", *COMBINED_CANDIDATES)
    normalise_outlines = forms.BooleanField(
        required=False,
        label="Normalise outlines",
        help_text="every candidate's outline redrawn in one style, so readers cannot tell "
        "manual from network masks by their shape",
    )

    @classmethod
    def initial_for(cls, preset: str) -> dict:
        config = PRESETS.get(preset) or PRESETS["fast-cpu"]
        return {
            "preset": preset if preset in PRESETS else "fast-cpu",
            **{
                k: config[k]
                for k in ("mode", "frozen", "epochs", "batch_size", "image_size", "folds")
            },
            "readers_per_case": config["readers_per_case"],
            "learning_rate": config["learning_rate"],
            **{k: config.get(k, REVIEW_DEFAULTS[k]) for k in cls.REVIEW_KEYS},
            **{k: bool(config.get(k)) for k in COMBINED_CANDIDATES},
            "normalise_outlines": config.get("normalise_outlines", True),
            "networks": sorted({f"{n['arch']}/{n['encoder']}" for n in config["networks"]}),
        }

    def config(self) -> dict:
        data = self.cleaned_data
        chosen = sorted(set(data["networks"]))
        preset = PRESETS.get(data.get("preset") or "")
        if preset and sorted({f"{n['arch']}/{n['encoder']}" for n in preset["networks"]}) == chosen:
            networks = preset["networks"]  # keeps the preset's seeds for repeated architectures
        else:
            networks = [
                dict(zip(("arch", "encoder"), key.split("/"), strict=True)) for key in chosen
            ]
        keys = (
            "mode",
            "frozen",
            "epochs",
            "batch_size",
            "image_size",
            "folds",
            "readers_per_case",
            "learning_rate",
            "normalise_outlines",
        )
        review = {
            k: data[k] if data.get(k) not in (None, "") else REVIEW_DEFAULTS[k]
            for k in self.REVIEW_KEYS
        }
        combined = {k: bool(data.get(k)) for k in COMBINED_CANDIDATES}
        return {"networks": networks, **{k: data[k] for k in keys}, **review, **combined}


@role_required(ADMIN)
def dashboard(request: HttpRequest) -> HttpResponse:
    context = {"jobs": job_board(), "workers": worker_board()}
    if request.htmx and request.GET.get("part") in ("jobs", "workers"):
        return render(request, f"dashboard/index.html#{request.GET['part']}", context)
    context["datasets"] = datasets_for_dashboard()
    context["open_flags"] = open_flag_count()
    return render(request, "dashboard/index.html", context)


@role_required(ADMIN)
def stage_new(request: HttpRequest, dataset_id: int) -> HttpResponse:
    dataset = get_object_or_404(Dataset, pk=dataset_id)
    if request.method == "POST":
        form = StageForm(request.POST)
        if form.is_valid():
            try:
                stage = stage_create(
                    dataset=dataset,
                    preset=form.cleaned_data.get("preset") or None,
                    config=form.config(),
                    created_by=request.user,
                    name=form.cleaned_data.get("name", ""),
                    client_ip=client_ip(request),
                )
            except StageError as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(
                    request, f"Stage {stage.number} created. Check the plan, then launch it."
                )
                return redirect("dashboard_stage", stage_id=stage.pk)
    else:
        form = StageForm(initial=StageForm.initial_for(request.GET.get("preset", "fast-cpu")))
    template = "dashboard/stage_new.html#form" if request.htmx else "dashboard/stage_new.html"
    ctx = {
        "dataset": dataset,
        "form": form,
        "presets": PRESETS,
        "checkbox_fields": StageForm.CHECKBOXES,
    }
    return render(request, template, ctx)


@role_required(ADMIN)
def stage_detail(request: HttpRequest, stage_id: int) -> HttpResponse:
    stage = get_object_or_404(Stage.objects.select_related("dataset"), pk=stage_id)
    context = {
        "stage": stage,
        "jobs": job_board(stage=stage, limit=200),
        "summary": stage_job_summary(stage),
    }
    if request.htmx and request.GET.get("part") == "jobs":
        return render(request, "dashboard/stage.html#jobs", context)
    if stage.status == Stage.Status.DRAFT:
        try:
            plan = stage_plan(stage=stage)
            context["plan"] = {
                "training": len(plan["training"]),
                "targets": len(plan["targets"]),
                "folds": [len(f) for f in plan["folds"]] if plan["folds"] else None,
            }
        except StageError as exc:
            context["plan_error"] = str(exc)
    context.update(disagreement_context(stage=stage))
    context["networks"] = [
        network_label(n["arch"], n["encoder"]) + (f" seed {n['seed']}" if n.get("seed") else "")
        for n in stage.config.get("networks", [])
    ]
    context["interactive"] = {
        "current": interactive_model_current(dataset_id=stage.dataset_id),
        "cases": len(interactive_training_set(stage=stage)),
    }
    return render(request, "dashboard/stage.html", context)


@require_POST
@role_required(ADMIN)
def stage_interactive_view(request: HttpRequest, stage_id: int) -> HttpResponse:
    """Train the click-to-refine network on the accepted masks up to this stage."""
    stage = get_object_or_404(Stage.objects.select_related("dataset"), pk=stage_id)
    try:
        job = interactive_train_launch(stage=stage, by=request.user, client_ip=client_ip(request))
    except InteractiveError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(
            request,
            f"Click-to-refine training queued (job #{job.pk}) on "
            f"{len(job.params['training'])} accepted masks.",
        )
    return redirect("dashboard_stage", stage_id=stage.pk)


@require_POST
@role_required(ADMIN)
def stage_launch_view(request: HttpRequest, stage_id: int) -> HttpResponse:
    stage = get_object_or_404(Stage, pk=stage_id)
    try:
        jobs = stage_launch(stage=stage, by=request.user, client_ip=client_ip(request))
    except StageError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(
            request, f"Stage {stage.number} launched: {len(jobs)} training jobs queued."
        )
    return redirect("dashboard_stage", stage_id=stage.pk)


@require_POST
@role_required(ADMIN)
def stage_cancel_view(request: HttpRequest, stage_id: int) -> HttpResponse:
    stage = get_object_or_404(Stage, pk=stage_id)
    try:
        stage_cancel(stage=stage, by=request.user, client_ip=client_ip(request))
    except StageError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Stage {stage.number} cancelled.")
    return redirect("dashboard_stage", stage_id=stage.pk)


@role_required(ADMIN)
def job_detail(request: HttpRequest, job_id: int) -> HttpResponse:
    job = get_object_or_404(Job.objects.select_related("stage", "dataset"), pk=job_id)
    result = job_result_tables(job)
    error_lines = job.error.splitlines()
    # A failed import lists its rejected files in a table: the error's lines would repeat them.
    listed = any(table["key"] == "rejected" for table in result["tables"])
    context = {
        "row": job_row(job),
        "job": job,
        "active": job.state in (Job.State.QUEUED, Job.State.RUNNING),
        "result": result,
        "log_tail": log_tail(job.log),
        "error_lines": error_lines,
        "error_log": len(error_lines) > 1 and not listed,
    }
    if request.htmx and request.GET.get("part") in ("progress", "log"):
        return render(request, f"dashboard/job.html#{request.GET['part']}", context)
    return render(request, "dashboard/job.html", context)


@require_POST
@role_required(ADMIN)
def job_action(request: HttpRequest, job_id: int, action: str) -> HttpResponse:
    job = get_object_or_404(Job, pk=job_id)
    try:
        if action == "cancel":
            job_cancel(job=job, by=request.user, client_ip=client_ip(request))
            messages.success(request, f"Job #{job.pk}: asked to stop.")
        else:
            job_retry(job=job, by=request.user, client_ip=client_ip(request))
            messages.success(
                request, f"Job #{job.pk} queued again; training resumes from its last checkpoint."
            )
    except JobStateError as exc:
        messages.error(request, str(exc))
    return redirect_back(request, request.POST.get("next"), "dashboard_job", job_id=job.pk)


class UploadForm(forms.Form):
    dataset = forms.ModelChoiceField(queryset=Dataset.objects.order_by("name"), required=False)
    new_dataset = forms.CharField(required=False, max_length=200, label="or a new dataset named")
    label = forms.ChoiceField(
        choices=Label.choices, initial=Label.COVID, help_text="for files not named in a labels.csv"
    )
    licence = forms.CharField(
        required=False,
        max_length=LICENCE_MAX_LENGTH,
        label="Licence",
        help_text="named by exports, e.g. CC BY 4.0 (blank keeps the dataset's)",
    )

    def clean(self):
        data = super().clean()
        if bool(data.get("dataset")) == bool(data.get("new_dataset", "").strip()):
            raise forms.ValidationError("choose a dataset, or name a new one (not both)")
        return data


@body_limit(lambda: settings.IMPORT_MAX_FILE_BYTES + FORM_OVERHEAD)
@role_required(ADMIN)
def upload(request: HttpRequest) -> HttpResponse:
    """Upload a zip, some images or a whole folder (its layout kept) and import it as a job."""
    form = UploadForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        uploads = request.FILES.getlist("files")
        try:
            # A folder upload sends each file's path inside the folder beside it.
            paths = json.loads(request.POST.get("paths") or "[]")
        except ValueError:
            paths = []
        names = paths if len(paths) == len(uploads) else [u.name for u in uploads]
        try:
            with transaction.atomic():
                dataset = form.cleaned_data["dataset"] or Dataset.objects.create(
                    name=form.cleaned_data["new_dataset"].strip(), created_by=request.user
                )
                if form.cleaned_data["licence"]:
                    dataset_licence_set(dataset=dataset, licence=form.cleaned_data["licence"])
                job = import_upload_request(
                    dataset=dataset, files=list(zip(names, uploads, strict=True)),
                    label=form.cleaned_data["label"], user=request.user,
                    client_ip=client_ip(request),
                )  # fmt: skip
        except (UploadError, IntegrityError) as exc:
            form.add_error(
                None,
                "a dataset with that name exists" if isinstance(exc, IntegrityError) else str(exc),
            )
        else:
            messages.success(
                request, f"Upload stored: importing {job.params['file_name']} into {dataset.name}."
            )
            return redirect("dashboard_job", job_id=job.pk)
    return render(request, "dashboard/upload.html", {"form": form})
