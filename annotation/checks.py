"""System checks (`manage.py check`) about how the deployment's accounts are set up."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.checks import Tags, Warning, register
from django.db import DatabaseError
from django.db.models import Q

from annotation.roles import PROVENANCE_ROLES, READER_ROLES


def dual_role_accounts() -> list[str]:
    """Usernames of active readers (md, senior_md) who also see provenance."""
    readers = get_user_model().objects.filter(is_active=True, groups__name__in=READER_ROLES)
    dual = readers.filter(Q(is_superuser=True) | Q(groups__name__in=PROVENANCE_ROLES))
    return sorted(set(dual.values_list("username", flat=True)))


@register(Tags.security)
def check_role_separation(app_configs=None, **kwargs) -> list[Warning]:
    """Readers must not also be admins, researchers or superusers: they would not be blinded
    (they are given no review task, and this says which accounts to split)."""
    try:
        names = dual_role_accounts()
    except (DatabaseError, RuntimeError):
        # No database yet (not migrated, not reachable, or not allowed here, as in a test
        # that starts a worker): no accounts to check, and a check never stops start-up.
        return []
    if not names:
        return []
    return [
        Warning(
            f"{len(names)} account(s) are readers (md/senior_md) and also admin, researcher "
            f"or superuser: {', '.join(names)}",
            hint="Remove the reader role or the other one; readers who can see where masks "
            "come from are not blinded, and are given no cases to review.",
            id="annotation.W001",
        )
    ]
