"""Sign-in backends: django-axes' lock-out check in front of Django's password check, and the
signed-in user read back on every request with one written-out statement."""

from __future__ import annotations

from axes.backends import AxesStandaloneBackend
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.core.exceptions import ValidationError
from django.db import connections, router

from annotation import roles

USER_BACKEND = "annotation.authentication.UserBackend"
# Sessions signed in before UserBackend name Django's backend; they are read as UserBackend's
# (annotation.sessions), so nobody is signed out by the change.
SUPERSEDED_BACKENDS = {"django.contrib.auth.backends.ModelBackend": USER_BACKEND}


class LockoutBackend(AxesStandaloneBackend):
    """Refuses every sign-in of a locked-out user name (or address) before the password is
    checked: the login form, the admin's and /api/auth/token/ all pass their request. A call
    without a request (a script, Django's test client) has no client to count failures against;
    it goes on to the password check instead of failing."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username, password, **kwargs)


class UserBackend(ModelBackend):
    """Django's ModelBackend (the password check, is_active, permissions), except that the
    signed-in user, read on every request (nine per review decision), is one written-out
    statement that also brings the names of their groups (the role check on the same request):
    the ORM spends ten times the database's time building `User.objects.get`."""

    def get_user(self, user_id):
        model = get_user_model()
        meta = model._meta
        try:
            pk = meta.pk.to_python(user_id)
        except ValidationError:
            return None
        alias = router.db_for_read(model)
        qn = connections[alias].ops.quote_name
        column, joins = roles.group_names_join("u", alias)
        sql = (
            f"SELECT u.*, {column} AS collabmask_group FROM {qn(meta.db_table)} u{joins}"
            f" WHERE u.{qn(meta.pk.column)} = %s"
        )
        rows = list(model._default_manager.raw(sql, [pk], using=alias))  # a row per group
        if not rows or not self.user_can_authenticate(rows[0]):
            return None
        user = rows[0]
        setattr(user, roles.GROUP_NAMES, [r.collabmask_group for r in rows if r.collabmask_group])
        del user.collabmask_group
        return user
