"""Who and from where, for the change history that django-auditlog keeps of /admin/ edits."""

from __future__ import annotations

from auditlog.middleware import AuditlogMiddleware

from annotation.services.audit import client_ip


class AuditMiddleware(AuditlogMiddleware):
    """django-auditlog's middleware, taking the client's address as the web server saw it
    (the same as the audit trail) rather than from a client-supplied X-Forwarded-For."""

    @staticmethod
    def _get_remote_addr(request):
        return client_ip(request)
