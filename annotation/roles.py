"""Roles are Django groups. Superusers count as admins."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

MD = "md"
SENIOR_MD = "senior_md"
ADMIN = "admin"
RESEARCHER = "researcher"
ALL_ROLES = (MD, SENIOR_MD, ADMIN, RESEARCHER)
ROLE_LABELS = {
    MD: "MD (reader)",
    SENIOR_MD: "Senior MD (adjudicator)",
    ADMIN: "Admin",
    RESEARCHER: "Researcher",
}


def roles_of(user: AbstractBaseUser | AnonymousUser) -> frozenset[str]:
    if not user.is_authenticated:
        return frozenset()
    cached = getattr(user, "_collabmask_roles", None)
    if cached is None:
        cached = frozenset(user.groups.filter(name__in=ALL_ROLES).values_list("name", flat=True))
        if user.is_superuser:
            cached = cached | {ADMIN}
        user._collabmask_roles = cached
    return cached


def has_role(user: AbstractBaseUser | AnonymousUser, *roles: str) -> bool:
    return bool(roles_of(user) & set(roles))
