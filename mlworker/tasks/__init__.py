"""Celery tasks for model work: the only part of mlworker that knows Django.

Thin wrappers: they take a Job id, load rows and files, call the pure ML code in mlworker, and
write results through annotation's services. Celery finds them through this package.
"""

from mlworker.tasks import detector, segmentation  # noqa: F401 - registers the tasks
