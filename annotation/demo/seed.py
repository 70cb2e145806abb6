"""The demo a fresh `make run` shows: one account per role and a phantom dataset."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction

from annotation import roles
from annotation.models import Dataset

DEMO_DATASET = "Demo phantoms"
DEMO_USERS = {
    "demo-md": roles.MD,
    "demo-md2": roles.MD,
    "demo-senior": roles.SENIOR_MD,
    "demo-admin": roles.ADMIN,
    "demo-researcher": roles.RESEARCHER,
}


@transaction.atomic
def demo_accounts_ensure(
    *, passwords: dict[str, dict], new_password: Callable[[], str]
) -> dict[str, dict[str, str]]:
    """Create the demo users that are missing; keep the passwords of those that exist."""
    User = get_user_model()
    accounts: dict[str, dict[str, str]] = {}
    for username, role in DEMO_USERS.items():
        known = passwords.get(username, {}).get("password")
        user, created = User.objects.get_or_create(username=username)
        if created or not known or not user.check_password(known):
            known = new_password()
            user.set_password(known)
        if role == roles.ADMIN:
            user.is_staff = user.is_superuser = True
        user.save()
        user.groups.add(Group.objects.get_or_create(name=role)[0])
        accounts[username] = {"password": known, "role": role}
    return accounts


def demo_dataset_ensure(*, workdir: Path, n_covid: int, n_control: int, seed: int):
    """Write phantoms in the QaTa-COV19 layout and import them, unless the dataset exists."""
    from annotation.services.imports import cxr_import
    from mlworker.demo_weights import PRETRAIN_SEED
    from mlworker.phantoms import generate_cohort, write_qata_layout

    if seed == PRETRAIN_SEED:
        raise ValueError(
            f"seed {seed} makes the phantoms the demo's start weights are trained on "
            "(their true masks would leak): choose another"
        )
    if Dataset.objects.filter(name=DEMO_DATASET, radiographs__isnull=False).exists():
        return None
    folder = workdir / f"phantoms-seed{seed}"
    if folder.exists():
        shutil.rmtree(folder)
    cases = generate_cohort(seed=seed, n_covid=n_covid, n_control=n_control, size=256)
    write_qata_layout(cases, folder)
    dataset, _ = Dataset.objects.get_or_create(
        name=DEMO_DATASET,
        defaults={
            "description": f"Synthetic chest X-rays (seed {seed}); true masks in {folder}/hidden-truth"
        },
    )
    report = cxr_import(dataset=dataset, paths=[folder], dry_run=False, label="covid")
    demo_stage_ensure(dataset)
    return report


def demo_stage_ensure(dataset: Dataset):
    """A draft Stage I from the `demo-stage-1` preset, unless the dataset has a stage."""
    from annotation.services.stages import stage_create

    if dataset.stages.exists():
        return None
    return stage_create(dataset=dataset, preset="demo-stage-1", name="Demo Stage I")
