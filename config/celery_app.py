import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("collabmask")
app.config_from_object("django.conf:settings", namespace="CELERY")
# mlworker is a plain package, not a Django app: name it so its tasks.py is found.
app.autodiscover_tasks(["annotation", "mlworker"])


# Worker life-cycle hooks. Imports stay inside: this module loads before Django's apps.
@signals.worker_ready.connect
def _on_worker_ready(sender, **kwargs):
    from annotation.jobrunner import gpu_inventory, requeue_jobs_of_dead_processes
    from annotation.services.workers import worker_started

    queues = sorted(q.name for q in sender.app.amqp.queues.consume_from.values())
    worker_started(name=sender.hostname, queues=queues, gpus=gpu_inventory(), pid=os.getpid())
    # Jobs this node was running when its previous process died run again (and resume).
    requeue_jobs_of_dead_processes(sender.hostname)


_last_seen_write = [0.0]


@signals.heartbeat_sent.connect
def _on_heartbeat(sender, **kwargs):
    import time

    from annotation.jobrunner import requeue_jobs_of_dead_processes
    from annotation.services.workers import SEEN_EVERY, worker_seen

    if time.monotonic() - _last_seen_write[0] >= SEEN_EVERY.total_seconds():
        _last_seen_write[0] = time.monotonic()
        worker_seen(name=sender.eventer.hostname)
        # A pool process killed mid-job (out of memory, say) leaves its job running.
        requeue_jobs_of_dead_processes(sender.eventer.hostname)


@signals.worker_shutdown.connect
def _on_worker_shutdown(sender, **kwargs):
    from annotation.services.workers import worker_stopped

    worker_stopped(name=sender.hostname)
