from django.apps import AppConfig


class AnnotationConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "annotation"
    verbose_name = "Annotation"

    def ready(self) -> None:
        # The Celery worker's life-cycle hooks (they fire in worker processes only).
        from annotation.worker import signals  # noqa: F401
