"""Sign-ins, refused sign-ins and sign-outs into the audit trail, from Django's auth signals
(the login form, the admin's login and the API token endpoint all send them)."""

from __future__ import annotations

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver

from annotation.services.audit import audit_record, client_ip


def _ip(request) -> str | None:
    return client_ip(request) if request is not None else None


@receiver(user_logged_in, dispatch_uid="audit_login")
def _logged_in(sender, request, user, **kwargs) -> None:
    audit_record(action="login", actor=user, ip=_ip(request), target=user)


@receiver(user_logged_out, dispatch_uid="audit_logout")
def _logged_out(sender, request, user, **kwargs) -> None:
    if user is None:  # signing out without being signed in changes nothing
        return
    audit_record(action="logout", actor=user, ip=_ip(request), target=user)


@receiver(user_login_failed, dispatch_uid="audit_login_failed")
def _login_failed(sender, credentials, request=None, **kwargs) -> None:
    # The name as typed: the account may not exist. Django has already masked the password.
    typed = str(credentials.get("username", ""))[:150]
    audit_record(action="login.failed", actor=None, actor_name=typed, ip=_ip(request))
