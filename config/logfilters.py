"""Logging filters named in settings.LOGGING."""

from __future__ import annotations

import logging


class ClientErrorWithoutTraceback(logging.Filter):
    """Django logs a refused request (403 PermissionDenied, 400 SuspiciousOperation) with the
    exception's traceback; for an answer below 500 the one-line message is all there is to say."""

    def filter(self, record: logging.LogRecord) -> bool:
        status = getattr(record, "status_code", None)
        if status is None:
            response = getattr(record, "response", None)
            status = getattr(response, "status_code", None)
        if status is not None and status < 500:
            record.exc_info = None
            record.exc_text = None
        return True
