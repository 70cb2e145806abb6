"""Who may call which API endpoint: by role (annotation.roles), checked on every request.

MDs and senior MDs see nothing here but the review API (which exposes no provenance); data,
ground truths, stages, jobs, exports and inference are for admins and researchers, who in
turn never reach the review API, so they can never decide — not even when the same account is
also a reader: the review API answers it 403 and says why.
"""

from __future__ import annotations

from rest_framework.permissions import BasePermission

from annotation.roles import (
    ADMIN,
    MD,
    RESEARCHER,
    ROLE_CONFLICT,
    SENIOR_MD,
    has_role,
    sees_provenance,
)


class _RolePermission(BasePermission):
    roles: tuple[str, ...] = ()
    message = "Your role does not allow this."

    def has_permission(self, request, view) -> bool:
        return has_role(request.user, *self.roles)


def roles_required(*roles: str) -> type[BasePermission]:
    """A permission class that admits users with any of these roles."""
    return type(f"Roles_{'_'.join(roles)}", (_RolePermission,), {"roles": roles})


IsResearchReader = roles_required(ADMIN, RESEARCHER)
IsAdmin = roles_required(ADMIN)


class _BlindedReader(_RolePermission):
    """A reader whose account sees no provenance (annotation.roles.sees_provenance)."""

    def has_permission(self, request, view) -> bool:
        if not super().has_permission(request, view):
            return False
        if sees_provenance(request.user):
            self.message = ROLE_CONFLICT
            return False
        return True


def readers_required(*roles: str) -> type[BasePermission]:
    """A permission class for the review API: these reader roles, and blinded."""
    return type(f"Readers_{'_'.join(roles)}", (_BlindedReader,), {"roles": roles})


IsReader = readers_required(MD, SENIOR_MD)  # the review API
IsMD = readers_required(MD)  # pairwise rounds, drawings and undo are readers' own actions
