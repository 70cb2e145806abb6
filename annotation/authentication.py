"""Sign-in backends: django-axes' lock-out check in front of Django's password check."""

from __future__ import annotations

from axes.backends import AxesStandaloneBackend


class LockoutBackend(AxesStandaloneBackend):
    """Refuses every sign-in of a locked-out user name (or address) before the password is
    checked: the login form, the admin's and /api/auth/token/ all pass their request. A call
    without a request (a script, Django's test client) has no client to count failures against;
    it goes on to the password check instead of failing."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username, password, **kwargs)
