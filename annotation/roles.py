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


# Roles whose screens name where masks come from (statistics, exports, the admin, the API).
PROVENANCE_ROLES = (ADMIN, RESEARCHER)
READER_ROLES = (MD, SENIOR_MD)
ROLE_CONFLICT = (
    "Your account also has the admin or researcher role, whose pages show where every mask "
    "comes from; a reader who knows that is no longer blinded, so this account is never given "
    "cases to review. Ask an admin for a separate reader account."
)


def sees_provenance(user: AbstractBaseUser | AnonymousUser) -> bool:
    """Whether the user can see which mask is manual or which network made it (superusers
    count as admins): such a user is never given review or adjudication tasks."""
    return has_role(user, *PROVENANCE_ROLES)
