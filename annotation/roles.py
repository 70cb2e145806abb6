"""Roles are Django groups. Superusers count as admins."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import connections, router

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


# Set on a user by annotation.authentication.UserBackend, which reads the signed-in user and
# the names of their groups in one statement: the role checks then ask the database nothing.
GROUP_NAMES = "_collabmask_group_names"


def group_names_join(user_alias: str, alias: str) -> tuple[str, str]:
    """(column, joins): the group name column and the LEFT JOINs that reach a user's groups
    from the user table aliased `user_alias` (no group: one row whose column is NULL)."""
    groups = get_user_model()._meta.get_field("groups")
    through = groups.remote_field.through._meta
    group = groups.related_model._meta
    qn = connections[alias].ops.quote_name
    user_pk = qn(groups.model._meta.pk.column)
    joins = (
        f" LEFT JOIN {qn(through.db_table)} ug ON ug.{qn(groups.m2m_column_name())} = {user_alias}.{user_pk}"
        f" LEFT JOIN {qn(group.db_table)} g ON g.{qn(group.pk.column)} = ug.{qn(groups.m2m_reverse_name())}"
    )
    return f"g.{qn(group.get_field('name').column)}", joins


def _group_names(user: AbstractBaseUser) -> list[str]:
    """The names of the user's groups. Every request asks (the role check), so this is one
    statement written out: the ORM takes about 0.4 ms of CPU to build the same join, the
    database a few microseconds to run it. A user read by UserBackend carries them already."""
    known = getattr(user, GROUP_NAMES, None)
    if known is not None:
        return known
    meta = user._meta
    alias = router.db_for_read(type(user))
    qn = connections[alias].ops.quote_name
    column, joins = group_names_join("u", alias)
    sql = f"SELECT {column} FROM {qn(meta.db_table)} u{joins} WHERE u.{qn(meta.pk.column)} = %s"
    with connections[alias].cursor() as cursor:
        cursor.execute(sql, [user.pk])
        return [name for (name,) in cursor.fetchall() if name is not None]


def roles_of(user: AbstractBaseUser | AnonymousUser) -> frozenset[str]:
    if not user.is_authenticated:
        return frozenset()
    cached = getattr(user, "_collabmask_roles", None)
    if cached is None:
        cached = frozenset(_group_names(user)) & frozenset(ALL_ROLES)
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
