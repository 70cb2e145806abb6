"""Who may open a screen: the roles of annotation.roles, checked once per view."""

from __future__ import annotations

from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponseRedirect
from django.shortcuts import redirect
from django.utils.http import url_has_allowed_host_and_scheme

from annotation.roles import ROLE_LABELS, has_role


def role_required(*roles: str):
    """Anonymous users go to the login page; a signed-in user without the role gets 403."""

    def decorate(view):
        @wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs):
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not has_role(request.user, *roles):
                needed = " or ".join(ROLE_LABELS[r] for r in roles)
                raise PermissionDenied(f"this page is for the {needed} role")
            return view(request, *args, **kwargs)

        return wrapper

    return decorate


def redirect_back(request: HttpRequest, back: str | None, *fallback, **fallback_kwargs):
    """Redirect to `back` (a page the form came from) when it is a URL of this site, else to
    `redirect(*fallback, **fallback_kwargs)`: a posted URL never sends anyone elsewhere."""
    if back and url_has_allowed_host_and_scheme(
        back, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return HttpResponseRedirect(back)
    return redirect(*fallback, **fallback_kwargs)
