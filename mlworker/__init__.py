"""The machine side: pure ML code (networks, losses, training, prediction, infection maps,
detection, metrics, phantoms), importable and runnable without Django.

Nothing here imports Django, annotation or Celery (tests/test_boundaries.py checks): the
Celery tasks in annotation.worker drive this package with arrays and paths.
"""
