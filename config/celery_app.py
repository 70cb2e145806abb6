import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("collabmask")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Every task lives in annotation.worker.tasks; the worker's life-cycle hooks connect when the
# annotation app is ready (annotation.apps).
app.autodiscover_tasks(["annotation.worker"])
