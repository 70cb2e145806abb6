"""Worker life-cycle hooks: a worker says it started (queues, GPUs), keeps saying it is alive,
and says it stopped; jobs whose process died run again. Connected when the annotation app is ready;
Django-touching imports stay inside the handlers, which run after Django is set up."""

import os
import time

from celery import signals


@signals.worker_ready.connect
def _on_worker_ready(sender, **kwargs):
    from annotation.services.workers import worker_started
    from annotation.worker.runner import gpu_inventory, requeue_jobs_of_dead_processes

    queues = sorted(q.name for q in sender.app.amqp.queues.consume_from.values())
    worker_started(name=sender.hostname, queues=queues, gpus=gpu_inventory(), pid=os.getpid())
    # Jobs this node was running when its previous process died run again (and resume).
    requeue_jobs_of_dead_processes(sender.hostname)


_last_seen_write = [0.0]


@signals.heartbeat_sent.connect
def _on_heartbeat(sender, **kwargs):
    from annotation.services.workers import SEEN_EVERY, worker_seen
    from annotation.worker.runner import requeue_jobs_of_dead_processes

    if time.monotonic() - _last_seen_write[0] >= SEEN_EVERY.total_seconds():
        _last_seen_write[0] = time.monotonic()
        worker_seen(name=sender.eventer.hostname)
        # A pool process killed mid-job (out of memory, say) leaves its job running.
        requeue_jobs_of_dead_processes(sender.eventer.hostname)


@signals.worker_shutdown.connect
def _on_worker_shutdown(sender, **kwargs):
    from annotation.services.workers import worker_stopped

    worker_stopped(name=sender.hostname)
