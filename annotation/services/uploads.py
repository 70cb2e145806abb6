"""CXRs uploaded in the browser: stored as they came, then imported by a worker job with the
same importer as `manage.py import_cxr`."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction

from annotation.models import Dataset, Job, Label
from annotation.services.imports import ImportReport, cxr_import
from annotation.services.jobs import job_enqueue

UPLOADS = "uploads"


class UploadError(ValueError):
    """The upload cannot be imported; nothing was stored."""


def _safe_relative(name: str) -> str:
    path = PurePosixPath(name.replace("\\", "/"))
    parts = [p for p in path.parts if p not in ("", ".")]
    if not parts or path.is_absolute() or ".." in parts:
        raise UploadError(f"{name!r} is not a plain relative file name")
    return "/".join(parts)


def _upload_drop(*, prefix: str, stored: Iterable[str]) -> None:
    """Delete an upload's files and, on a filesystem, the folders they leave empty."""
    for path in stored:
        default_storage.delete(path)
    try:
        folder = Path(default_storage.path(prefix))
    except NotImplementedError:
        return  # object storage has no folders to leave behind
    shutil.rmtree(folder, ignore_errors=True)


def import_upload_request(
    *,
    dataset: Dataset,
    files: Iterable[tuple[str, UploadedFile]],
    label: str = Label.COVID,
    user: AbstractBaseUser | None = None,
    client_ip: str | None = None,
) -> Job:
    """Store the uploaded files (keeping their folder layout) and queue their import."""
    if label not in Label.values:
        raise UploadError(f"label must be one of {', '.join(Label.values)}")
    files = [(_safe_relative(name), upload) for name, upload in files]
    if not files:
        raise UploadError("choose a zip file, some images or a folder to upload")
    total = sum(upload.size for _, upload in files)
    if total > settings.IMPORT_MAX_FILE_BYTES:
        raise UploadError(
            f"the upload is {total:,} bytes; the limit is {settings.IMPORT_MAX_FILE_BYTES:,}"
        )
    if len({name for name, _ in files}) != len(files):
        raise UploadError("two uploaded files have the same name")
    prefix = f"{UPLOADS}/{uuid.uuid4().hex}"
    stored = []
    try:
        for name, upload in files:
            stored.append(default_storage.save(f"{prefix}/{name}", upload))
        with transaction.atomic():
            return job_enqueue(
                kind=Job.Kind.IMPORT,
                params={
                    "dataset": dataset.pk,
                    "prefix": prefix,
                    "files": stored,
                    "label": label,
                    "file_name": files[0][0] if len(files) == 1 else f"{len(files)} files",
                    "client_ip": client_ip,  # for the import's audit event
                },
                dataset=dataset,
                created_by=user,
            )
    except Exception:
        _upload_drop(prefix=prefix, stored=stored)
        raise


def import_upload_run(*, job: Job, progress=None) -> ImportReport:
    """The worker's part: bring the files to a scratch folder, import them, drop the upload."""
    params = job.params
    dataset = Dataset.objects.get(pk=params["dataset"])
    prefix = params["prefix"] + "/"
    with tempfile.TemporaryDirectory(prefix="cxr-upload-") as tmp:
        # Zips are imported as zips; loose files and folders as one folder (so masks pair up).
        loose, zips = Path(tmp) / "upload", Path(tmp) / "zips"
        paths: list[Path] = []
        for path in params["files"]:
            relative = path.removeprefix(prefix)
            is_zip = "/" not in relative and relative.lower().endswith(".zip")
            target = (zips if is_zip else loose) / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            with default_storage.open(path, "rb") as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
            if is_zip:
                paths.append(target)
        if loose.exists():
            paths.append(loose)
        report = cxr_import(
            dataset=dataset,
            paths=paths,
            label=params["label"],
            progress=progress,
            by=job.created_by,
            client_ip=params.get("client_ip"),
        )
    _upload_drop(prefix=params["prefix"], stored=params["files"])
    return report
