"""Server-side autosave of a drawing in progress: one draft per (task, reader)."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from annotation.models import DrawingDraft, ReviewTask
from annotation.services.assignment import task_lease_renew
from annotation.services.decisions import drawing_validate
from annotation.services.review_errors import ReviewError
from cxrio import masks as maskio

# A browser clock further ahead than this is not believed.
_MAX_CLOCK_AHEAD = timedelta(minutes=5)


def draft_save(
    *,
    task: ReviewTask,
    reader: AbstractBaseUser,
    png: bytes,
    updated_at: datetime | None = None,
) -> DrawingDraft:
    """Keep the reader's latest drawing, re-encoded as a 1-bit PNG (never stored as sent).

    updated_at is when the browser made the drawing; a save older than the stored draft (a
    late retry from a closed tab) is ignored and the stored draft returned."""
    if task.reader_id != reader.pk or task.status != ReviewTask.Status.LEASED:
        raise ReviewError("drafts are kept only for a case you are working on")
    now = timezone.now()
    if updated_at is None or updated_at > now + _MAX_CLOCK_AHEAD:
        updated_at = now
    pixels = drawing_validate(task=task, png=png, allow_empty=True)
    data = maskio.mask_to_png(pixels)
    with transaction.atomic():
        draft = DrawingDraft.objects.select_for_update().filter(task=task, reader=reader).first()
        if draft is None:
            try:
                with transaction.atomic():
                    draft = DrawingDraft.objects.create(
                        task=task, reader=reader, png=data, updated_at=updated_at
                    )
            except IntegrityError:
                # Two autosaves crossed; compare with the one that got in first.
                draft = DrawingDraft.objects.select_for_update().get(task=task, reader=reader)
        if draft.updated_at > updated_at:
            return draft
        draft.png = data
        draft.updated_at = updated_at
        draft.save(update_fields=["png", "updated_at"])
    # Drawing takes time: a reader who is saving drafts keeps their lease.
    task_lease_renew(task=task, reader=reader)
    return draft


def draft_delete(*, task: ReviewTask, reader: AbstractBaseUser) -> int:
    deleted, _ = DrawingDraft.objects.filter(task=task, reader=reader).delete()
    return deleted
