"""Every Celery task of collabmask; Celery finds them through this package
(config.celery_app autodiscovers annotation.worker). Task names and queues are listed once,
in annotation.services.jobs.TASKS."""

from annotation.worker.tasks import (  # noqa: F401 - registers them
    data,
    detector,
    interactive,
    segmentation,
)
