"""Sessions stored in the database, whose idle timeout moves on without a write per request.

Every request moves a session's end on (SESSION_COOKIE_AGE after its last use), but writing
the session row on every request costs a write transaction per image and per screen. The
store remembers the expiry it read; the middleware saves the session again (and sends the
cookie with a fresh max-age) only once that expiry lags the idle timeout by more than
REFRESH_SECONDS. The idle timeout therefore holds to within that minute.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore
from django.contrib.sessions.middleware import SessionMiddleware as DjangoSessionMiddleware
from django.db import connections, router
from django.utils import timezone

from annotation.authentication import SUPERSEDED_BACKENDS

REFRESH_SECONDS = 60


class SessionStore(DatabaseSessionStore):
    stored_expiry: datetime | None = None

    def _get_session_from_db(self):
        # Every request reads its session: one statement written out (the ORM spends ten times
        # the database's time building it), with the ORM's conversions of the row.
        model = self.model
        alias = router.db_for_read(model)
        ops = connections[alias].ops
        meta = model._meta
        sql = (
            f"SELECT * FROM {ops.quote_name(meta.db_table)}"
            f" WHERE {ops.quote_name(meta.pk.column)} = %s"
            f" AND {ops.quote_name(meta.get_field('expire_date').column)} > %s"
        )
        now = ops.adapt_datetimefield_value(timezone.now())
        session = next(iter(model.objects.raw(sql, [self.session_key, now], using=alias)), None)
        if session is None:
            self._session_key = None
        self.stored_expiry = session.expire_date if session is not None else None
        return session

    def load(self) -> dict:
        data = super().load()
        # A session signed in through a backend since replaced is read as its successor's.
        successor = SUPERSEDED_BACKENDS.get(data.get(BACKEND_SESSION_KEY))
        if successor is not None and successor in settings.AUTHENTICATION_BACKENDS:
            data[BACKEND_SESSION_KEY] = successor
        return data

    def needs_refresh(self) -> bool:
        """True when the stored expiry lags a fresh one by more than REFRESH_SECONDS."""
        if self.stored_expiry is None or self.session_key is None:
            return False
        fresh = timezone.now() + timedelta(seconds=self.get_expiry_age())
        return fresh - self.stored_expiry > timedelta(seconds=REFRESH_SECONDS)

    def save(self, must_create: bool = False) -> None:
        super().save(must_create=must_create)
        self.stored_expiry = self.get_expiry_date()


class SessionMiddleware(DjangoSessionMiddleware):
    """Django's session middleware, saving an unchanged session only when its idle timeout
    has to move on (SessionStore.needs_refresh)."""

    def process_response(self, request, response):
        session = getattr(request, "session", None)
        if (
            session is not None
            and session.accessed
            and not session.modified
            and getattr(session, "needs_refresh", None) is not None
            and session.needs_refresh()
        ):
            session.modified = True
        return super().process_response(request, response)
