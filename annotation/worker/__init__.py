"""The Celery side of collabmask, in one place: the job runner (claim, progress, cancel,
end once), the worker life-cycle signals and the tasks. Tasks take a Job id, load rows and
files, call the pure ML code in mlworker with arrays and paths, and write results through
annotation's services."""
