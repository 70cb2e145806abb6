"""The dataset's audit trail as an export carries it: one JSON object a line (audit.jsonl).

People appear under the same pseudonyms as in the manifest (reader-<id>); names, client
addresses and free-text reasons that could name someone stay in the database.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from annotation.models import AuditEvent, Dataset
from annotation.services.exports.manifest import reader_name

AUDIT_FILE = "audit.jsonl"


def audit_lines(*, dataset: Dataset, chunk: int = 2000) -> Iterator[bytes]:
    """The dataset's events, oldest first, as UTF-8 JSON lines."""
    events = AuditEvent.objects.filter(dataset=dataset).order_by("at", "id")
    for event in events.iterator(chunk_size=chunk):
        record = {
            "at": event.at.isoformat(),
            "actor": reader_name(event.actor_id) if event.actor_id is not None else None,
            "action": event.action,
            "target": f"{event.target_type}:{event.target_id}" if event.target_type else None,
            "old": event.old,
            "new": event.new,
        }
        yield (json.dumps(record, sort_keys=True) + "\n").encode("utf-8")
