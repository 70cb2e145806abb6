"""Demo accounts (one per role) and a phantom dataset with manual masks for a subset.

Idempotent: a second run changes nothing and prints the same accounts.
"""

from __future__ import annotations

import json
import secrets

from django.conf import settings
from django.core.management.base import BaseCommand

from annotation.demo.seed import DEMO_DATASET, demo_accounts_ensure, demo_dataset_ensure


class Command(BaseCommand):
    help = "Create demo accounts for each role and a phantom dataset (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("--covid", type=int, default=40, help="COVID-19 phantom cases")
        parser.add_argument("--control", type=int, default=20, help="control phantom cases")
        parser.add_argument("--seed", type=int, default=2021)

    def handle(self, *args, covid: int, control: int, seed: int, **options):
        accounts_file = settings.VAR_DIR / "demo-accounts.json"
        passwords = json.loads(accounts_file.read_text()) if accounts_file.exists() else {}
        accounts = demo_accounts_ensure(
            passwords=passwords, new_password=lambda: secrets.token_urlsafe(9)
        )
        accounts_file.write_text(json.dumps(accounts, indent=2))
        accounts_file.chmod(0o600)

        report = demo_dataset_ensure(
            workdir=settings.VAR_DIR / "demo", n_covid=covid, n_control=control, seed=seed
        )
        if report is None:
            self.stdout.write(f"Demo dataset {DEMO_DATASET!r} is already there.")
        else:
            self.stdout.write(
                f"Demo dataset {DEMO_DATASET!r}: {len(report.imported)} cases, "
                f"{len(report.masks_imported)} manual masks; a draft Stage I from the "
                "demo-stage-1 preset (its networks start from weights trained on phantoms of "
                "another seed, made by the worker on first launch, several CPU minutes, once)."
            )
        self.stdout.write("Demo accounts (user / password / role):")
        for username, entry in accounts.items():
            self.stdout.write(f"  {username:<16} {entry['password']:<14} {entry['role']}")
