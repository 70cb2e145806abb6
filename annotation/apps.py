from django.apps import AppConfig


class AnnotationConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "annotation"
    verbose_name = "Annotation"

    def ready(self) -> None:
        # Sign-ins into the audit trail; the deployment checks (role separation).
        from annotation import audit_signals, checks  # noqa: F401

        # The Celery worker's life-cycle hooks (they fire in worker processes only).
        from annotation.worker import signals  # noqa: F401

        _register_change_history()


def _register_change_history() -> None:
    """Field-by-field change history (django-auditlog) of what /admin/ can edit: accounts and
    their roles (group membership), datasets, cases, stages and model versions."""
    from auditlog.registry import auditlog
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    from annotation import models

    auditlog.register(
        get_user_model(), m2m_fields={"groups"}, exclude_fields=["password", "last_login"]
    )
    auditlog.register(Group, m2m_fields={"permissions"})
    for model in (models.Dataset, models.Radiograph, models.Stage, models.ModelVersion):
        auditlog.register(model)
