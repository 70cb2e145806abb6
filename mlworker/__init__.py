"""The machine side: pure ML code, importable and runnable without Django.

Only mlworker.tasks touches Django; everything else here must not.
"""
