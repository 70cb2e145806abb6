import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("collabmask")
app.config_from_object("django.conf:settings", namespace="CELERY")
# mlworker is a plain package, not a Django app: name it so its tasks.py is found.
app.autodiscover_tasks(["annotation", "mlworker"])
