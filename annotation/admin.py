from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.template.response import TemplateResponse

from annotation import models
from annotation.roles import ADMIN, has_role
from annotation.services.audit import ACTIONS, client_ip
from annotation.services.corrections import CorrectionError, decision_void


class ReadOnlyAdmin(admin.ModelAdmin):
    """Shown, never added, changed or deleted here: these rows change only through services,
    which audit what they do (a decision is corrected with the 'void' action, which recomputes
    the ground truth). What /admin/ can edit (accounts, groups, datasets, cases, stages, model
    versions) is kept field by field in django-auditlog's change history."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


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
class MaskAdmin(ReadOnlyAdmin):
    list_display = ["id", "radiograph", "kind", "stage", "model_version", "author", "area"]
    list_filter = ["kind", "stage"]
    raw_id_fields = ["radiograph", "model_version", "author", "stage"]


@admin.register(models.Stage)
class StageAdmin(admin.ModelAdmin):
    list_display = [
        "__str__",
        "mode",
        "status",
        "readers_per_case",
        "queue_order",
        "launched_at",
        "closed_at",
    ]
    list_filter = ["dataset", "status", "mode", "queue_order"]


@admin.register(models.ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["__str__", "dataset", "stage", "purpose", "fold", "deployed", "created_at"]
    list_filter = ["dataset", "purpose", "arch", "encoder", "deployed"]


@admin.register(models.Candidate)
class CandidateAdmin(ReadOnlyAdmin):
    list_display = ["id", "stage", "radiograph", "mask"]
    list_filter = ["stage"]
    raw_id_fields = ["radiograph", "mask", "sources"]


@admin.register(models.CaseDisagreement)
class CaseDisagreementAdmin(ReadOnlyAdmin):
    list_display = [
        "radiograph",
        "stage",
        "n_candidates",
        "mean_pairwise_dice",
        "disagreement_area",
        "mean_entropy",
        "audit_sample",
    ]
    list_filter = ["stage", "audit_sample"]
    raw_id_fields = ["radiograph", "auto_candidate"]


@admin.register(models.ReviewTask)
class ReviewTaskAdmin(ReadOnlyAdmin):
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
class PairwiseRoundAdmin(ReadOnlyAdmin):
    list_display = ["task", "number", "left", "right", "winner", "created_at"]
    raw_id_fields = ["task", "left", "right", "winner"]


@admin.register(models.Decision)
class DecisionAdmin(ReadOnlyAdmin):
    list_display = [
        "task",
        "reader",
        "outcome",
        "candidate",
        "position",
        "time_on_screen_ms",
        "revoked_at",
    ]
    list_filter = ["outcome", "task__stage", "task__kind"]
    raw_id_fields = ["task", "candidate", "mask"]
    actions = ["void_decisions"]

    def has_void_permission(self, request) -> bool:
        return has_role(request.user, ADMIN)

    @admin.action(
        description="Void the selected decisions (case back to review)", permissions=["void"]
    )
    def void_decisions(self, request, queryset):
        """Ask for the reason, then void each decision through the correction service."""
        reason = request.POST.get("reason", "").strip()
        if "confirm" in request.POST and reason:
            for decision in queryset:
                try:
                    decision_void(
                        decision=decision,
                        reason=reason,
                        by=request.user,
                        client_ip=client_ip(request),
                    )
                except CorrectionError as exc:
                    self.message_user(request, f"Decision #{decision.pk}: {exc}", messages.ERROR)
                else:
                    self.message_user(
                        request,
                        f"Decision #{decision.pk} voided; its case is back in review.",
                        messages.SUCCESS,
                    )
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": "Void decisions",
            "opts": self.model._meta,
            "decisions": queryset,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "missing_reason": "confirm" in request.POST,
        }
        return TemplateResponse(request, "admin/annotation/decision/void.html", context)


@admin.register(models.GroundTruth)
class GroundTruthAdmin(ReadOnlyAdmin):
    list_display = ["radiograph", "stage", "source", "method", "agreement", "created_at"]
    list_filter = ["stage", "source", "method"]
    raw_id_fields = ["radiograph", "mask"]


@admin.register(models.Job)
class JobAdmin(ReadOnlyAdmin):
    list_display = ["id", "kind", "state", "stage", "progress", "attempts", "worker", "created_at"]
    list_filter = ["kind", "state"]
    readonly_fields = ["log", "error", "progress_detail", "result"]


@admin.register(models.WorkerNode)
class WorkerNodeAdmin(ReadOnlyAdmin):
    list_display = ["name", "queues", "gpus", "last_seen_at", "stopped_at"]


@admin.register(models.DrawingDraft)
class DrawingDraftAdmin(ReadOnlyAdmin):
    list_display = ["task", "reader", "updated_at"]
    raw_id_fields = ["task", "reader"]


@admin.register(models.CaseFlag)
class CaseFlagAdmin(ReadOnlyAdmin):
    list_display = [
        "created_at",
        "stage",
        "radiograph",
        "reader",
        "reason",
        "skipped",
        "resolved_at",
    ]
    list_filter = ["reason", "skipped", "stage"]
    raw_id_fields = ["stage", "radiograph", "task", "reader", "resolved_by"]


@admin.register(models.Export)
class ExportAdmin(ReadOnlyAdmin):
    list_display = ["id", "dataset", "created_by", "created_at", "n_cases", "size"]
    list_filter = ["dataset"]


class _ActionFilter(admin.SimpleListFilter):
    title = "action"
    parameter_name = "action"

    def lookups(self, request, model_admin):
        return list(ACTIONS.items())

    def queryset(self, request, queryset):
        return queryset.filter(action=self.value()) if self.value() else queryset


@admin.register(models.AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    """The audit trail, to browse and filter; nobody edits or deletes it."""

    list_display = ["at", "actor_name", "ip", "action", "target_type", "target_id", "dataset"]
    list_filter = [_ActionFilter, "dataset", "target_type", ("at", admin.DateFieldListFilter)]
    search_fields = ["actor_name", "ip", "target_id", "reason"]
    date_hierarchy = "at"
    list_select_related = ["dataset"]
