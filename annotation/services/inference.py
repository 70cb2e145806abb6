"""Asking the deployed detector for an infection map: of a new upload, or of a stored case.

The web process never runs a network: it checks the input, stores what the worker needs and
queues an INFER job (the CPU queue); the page or API polls the job for its result (see
annotation.selectors.inference). An upload is decoded here only to refuse bad files before
anything is stored, and only its de-identified 8-bit display image is kept: a DICOM's
header, with the patient's identifiers, never reaches storage.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import PurePath

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from annotation.models import Dataset, Job, ModelVersion, Radiograph
from annotation.services.detector import DetectorError, deployed_classifier, deployed_detector
from annotation.services.jobs import job_enqueue
from annotation.storage import blob_write, content_path
from cxrio.images import DICOM, ImageError, decode_image, encode_png

log = logging.getLogger(__name__)

UPLOADS = "inference-uploads"
CAVEAT_FACTS = ("view_position", "body_part_examined", "modality", "colour")
ACTIVE_OR_DONE = (Job.State.QUEUED, Job.State.RUNNING, Job.State.SUCCEEDED)


class InferenceInputError(ValueError):
    """The upload cannot be analysed; the message says why, for the person uploading."""


def _max_bytes() -> int:
    return min(settings.IMPORT_MAX_FILE_BYTES, settings.DATA_UPLOAD_MAX_MEMORY_SIZE)


def _models(dataset: Dataset | None) -> tuple[ModelVersion, ModelVersion | None]:
    detector = deployed_detector(dataset=dataset)
    return detector, deployed_classifier(detector=detector)


def inference_request(
    *,
    upload_bytes: bytes,
    filename: str,
    user: AbstractBaseUser | None,
    dataset: Dataset | None = None,
) -> Job:
    """Queue the analysis of an uploaded CXR (PNG, JPEG or DICOM) by the deployed detector.

    `dataset` picks whose deployed detector runs; None takes the newest deployed detector.
    Raises InferenceInputError for a bad file and DetectorError when no detector is
    deployed; in both cases nothing is stored or queued.
    """
    if len(upload_bytes) > _max_bytes():
        raise InferenceInputError(
            f"the file is {len(upload_bytes):,} bytes; at most {_max_bytes():,} are accepted"
        )
    try:
        decoded = decode_image(upload_bytes, max_pixels=settings.IMPORT_MAX_PIXELS)
    except ImageError as exc:
        raise InferenceInputError(f"{PurePath(filename or 'upload').name}: {exc}") from exc
    detector, classifier = _models(dataset)
    png = encode_png(decoded.display)
    path = content_path(UPLOADS, hashlib.sha256(png).hexdigest(), "png")
    blob_write(path, png)
    # A DICOM file name often carries the patient's name: keep it only for plain images.
    shown_name = (
        "upload.dcm"
        if decoded.source_format == DICOM
        else PurePath(filename or "upload").name[-120:]
    )
    with transaction.atomic():
        job = job_enqueue(
            kind=Job.Kind.INFER,
            params={
                "source": "upload",
                "image": path,
                "filename": shown_name,
                "format": decoded.source_format,
                "width": decoded.width,
                "height": decoded.height,
                # What the viewer's caveats read (view, body part, colour): nothing identifying.
                "metadata": {k: decoded.metadata[k] for k in CAVEAT_FACTS if k in decoded.metadata},
                "model_version": detector.pk,
                "classifier": classifier.pk if classifier else None,
            },
            dataset=detector.dataset,
            created_by=user,
        )
    log.info("inference job %s queued for an upload (%s)", job.pk, decoded.source_format)
    return job


def case_inference_request(
    *, radiograph: Radiograph, user: AbstractBaseUser | None, again: bool = False
) -> Job:
    """The infection map job of a stored case by its dataset's deployed detector.

    The latest job for the same case and models is reused, so reloading a page never queues
    the same work twice; a failed or cancelled one too (its error is shown) unless `again`.
    """
    detector, classifier = _models(radiograph.dataset)
    classifier_id = classifier.pk if classifier else None
    states = ACTIVE_OR_DONE if again else Job.State.values
    with transaction.atomic():
        existing = (
            Job.objects.filter(
                kind=Job.Kind.INFER,
                state__in=states,
                params__radiograph=radiograph.pk,
                params__model_version=detector.pk,
                params__classifier=classifier_id,
            )
            .order_by("-created_at")
            .first()
        )
        if existing is not None:
            return existing
        return job_enqueue(
            kind=Job.Kind.INFER,
            params={
                "source": "radiograph",
                "radiograph": radiograph.pk,
                "model_version": detector.pk,
                "classifier": classifier_id,
            },
            dataset=radiograph.dataset,
            created_by=user,
        )


__all__ = [
    "DetectorError",
    "InferenceInputError",
    "case_inference_request",
    "inference_request",
]
