from django.contrib import admin

from annotation import models


@admin.register(models.Dataset)
class DatasetAdmin(admin.ModelAdmin):
    list_display = ["name", "mask_max_side", "created_at"]
    search_fields = ["name"]


@admin.register(models.Radiograph)
class RadiographAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "dataset",
        "label",
        "width",
        "height",
        "bit_depth",
        "source_format",
        "split",
    ]
    list_filter = ["dataset", "label", "source_format", "split"]
    search_fields = ["name", "sha256"]
    readonly_fields = ["sha256", "patient_key", "original", "display", "imported_at"]


@admin.register(models.Mask)
class MaskAdmin(admin.ModelAdmin):
    list_display = ["id", "radiograph", "kind", "stage", "model_version", "author", "area"]
    list_filter = ["kind", "stage"]
    raw_id_fields = ["radiograph", "model_version", "author", "stage"]


@admin.register(models.Stage)
class StageAdmin(admin.ModelAdmin):
    list_display = ["__str__", "mode", "status", "readers_per_case", "launched_at", "closed_at"]
    list_filter = ["dataset", "status", "mode"]


@admin.register(models.ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["__str__", "dataset", "stage", "purpose", "fold", "deployed", "created_at"]
    list_filter = ["dataset", "purpose", "arch", "encoder", "deployed"]


@admin.register(models.Candidate)
class CandidateAdmin(admin.ModelAdmin):
    list_display = ["id", "stage", "radiograph", "mask"]
    list_filter = ["stage"]
    raw_id_fields = ["radiograph", "mask", "sources"]


@admin.register(models.ReviewTask)
class ReviewTaskAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "stage",
        "radiograph",
        "kind",
        "slot",
        "status",
        "reader",
        "lease_expires_at",
    ]
    list_filter = ["stage", "kind", "status"]
    raw_id_fields = ["radiograph", "reader"]


@admin.register(models.PairwiseRound)
class PairwiseRoundAdmin(admin.ModelAdmin):
    list_display = ["task", "number", "left", "right", "winner", "created_at"]
    raw_id_fields = ["task", "left", "right", "winner"]


@admin.register(models.Decision)
class DecisionAdmin(admin.ModelAdmin):
    list_display = [
        "task",
        "reader",
        "outcome",
        "candidate",
        "position",
        "time_on_screen_ms",
        "revoked_at",
    ]
    list_filter = ["outcome"]
    raw_id_fields = ["task", "candidate", "mask"]


@admin.register(models.GroundTruth)
class GroundTruthAdmin(admin.ModelAdmin):
    list_display = ["radiograph", "stage", "source", "method", "agreement", "created_at"]
    list_filter = ["stage", "source", "method"]
    raw_id_fields = ["radiograph", "mask"]


@admin.register(models.Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ["id", "kind", "state", "stage", "progress", "attempts", "worker", "created_at"]
    list_filter = ["kind", "state"]
    readonly_fields = ["log", "error", "progress_detail", "result"]


@admin.register(models.WorkerNode)
class WorkerNodeAdmin(admin.ModelAdmin):
    list_display = ["name", "queues", "gpus", "last_seen_at", "stopped_at"]


@admin.register(models.DrawingDraft)
class DrawingDraftAdmin(admin.ModelAdmin):
    list_display = ["task", "reader", "updated_at"]
    raw_id_fields = ["task", "reader"]


@admin.register(models.Export)
class ExportAdmin(admin.ModelAdmin):
    list_display = ["id", "dataset", "created_by", "created_at", "n_cases", "size"]
    list_filter = ["dataset"]
    readonly_fields = [f.name for f in models.Export._meta.fields]

    def has_change_permission(self, request, obj=None):
        return False  # exports are immutable
