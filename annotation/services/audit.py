"""The audit trail: one append-only AuditEvent per action that changes what the dataset says
or who may do what — who, when, from where, what, old → new.

Domain actions (decisions, rounds, undo, adjudication, stage and job actions, detector deploys,
exports, imports, corrections) call `audit_record` in the service that does them, in the same
transaction, so an action that is rolled back leaves no event and a replayed request (nothing
changed) writes none. Logins, failed logins and logouts are recorded from Django's auth
signals (annotation.signals). Edits made in /admin/ and role (group) changes are kept, field
by field, by django-auditlog (annotation.apps registers the models).

Views pass the client's address in (`client_ip(request)`); a worker or a command has none.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import models
from django.http import HttpRequest

from annotation.models import AuditEvent, Dataset, Decision, GroundTruth

# What the trail records, for the admin's filter and the README.
ACTIONS = {
    "login": "signed in",
    "login.failed": "sign-in refused",
    "logout": "signed out",
    "round.record": "pairwise round",
    "round.undo": "pairwise round undone by its reader",
    "decision.record": "decision",
    "decision.undo": "decision undone by its reader",
    "decision.reopen": "earlier decision reopened by its reader",
    "decision.void": "decision voided by staff",
    "case.flag": "case flagged by a reader",
    "case.skip": "case skipped by a reader",
    "flag.resolve": "flag resolved",
    "adjudication.record": "adjudication",
    "case.auto_accept": "auto-accepted by agreement",
    "stage.create": "stage created",
    "stage.launch": "stage launched",
    "stage.cancel": "stage cancelled",
    "job.cancel": "job cancelled",
    "job.retry": "job retried",
    "detector.deploy": "detector deployed",
    "interactive.train": "click-to-refine training launched",
    "export.request": "export requested",
    "export.build": "export built",
    "export.download": "export downloaded",
    "import": "import",
}


def client_ip(request: HttpRequest) -> str | None:
    """The address the request came from. With TRUSTED_PROXY_COUNT proxies in front, it is the
    one the outermost proxy saw, which each proxy appends to X-Forwarded-For: counted from the
    right, so addresses a client wrote into the header itself are never taken. Without
    proxies, it is the address the web server saw."""
    value = request.META.get("REMOTE_ADDR", "")
    proxies = settings.TRUSTED_PROXY_COUNT
    if proxies:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")
        hops = [hop.strip() for hop in forwarded if hop.strip()]
        if len(hops) >= proxies:
            value = hops[-proxies]
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


def audit_record(
    *,
    action: str,
    actor: AbstractBaseUser | None,
    ip: str | None = None,
    target: models.Model | None = None,
    dataset: Dataset | int | None = None,
    old: dict[str, Any] | None = None,
    new: dict[str, Any] | None = None,
    reason: str = "",
    actor_name: str = "",
) -> AuditEvent:
    """Append one event to the trail. `old` and `new` hold the values the action changed."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    if actor is not None and not actor.is_authenticated:
        actor = None
    return AuditEvent.objects.create(
        actor=actor,
        actor_name=(actor.get_username() if actor is not None else actor_name)[:150],
        ip=ip or None,
        action=action,
        target_type=target._meta.model_name if target is not None else "",
        target_id=str(target.pk) if target is not None else "",
        dataset_id=dataset.pk if isinstance(dataset, Dataset) else dataset,
        old=old,
        new=new,
        reason=reason,
    )


def decision_summary(decision: Decision) -> dict:
    """A decision as the audit trail records it."""
    return {
        "decision": decision.pk,
        "task": decision.task_id,
        "reader": decision.reader_id,
        "outcome": decision.outcome,
        "position": decision.position,
        "candidate": decision.candidate_id,
        "mask": decision.mask_id,
    }


def truth_summary(truth: GroundTruth | None) -> dict | None:
    """A case's accepted mask as the audit trail records it."""
    if truth is None:
        return None
    return {
        "ground_truth": truth.pk,
        "mask": truth.mask_id,
        "stage": truth.stage_id,
        "source": truth.source,
        "method": truth.method,
        "agreement": truth.agreement,
    }
