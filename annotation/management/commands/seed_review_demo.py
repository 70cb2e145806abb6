"""A review stage built from a dataset's cases, with pretend network candidates.

For demos and browser tests: `python manage.py seed_review_demo --dataset "Demo phantoms"`.
With --simulate the existing MD accounts decide every case (the stage is marked simulated),
which fills the statistics page.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from annotation import roles
from annotation.demo.review import (
    DEMO_NETWORKS,
    review_demo_simulate,
    review_demo_stage,
)
from annotation.models import Dataset, Label, Stage


class Command(BaseCommand):
    help = "Create a review stage with candidates from a dataset's COVID-19 cases (demo data)."

    def add_arguments(self, parser):
        parser.add_argument("--dataset", required=True, help="name of an imported dataset")
        parser.add_argument("--mode", choices=[m.value for m in Stage.Mode], default="nway")
        parser.add_argument("--networks", type=int, default=5, help="pretend networks per case")
        parser.add_argument("--readers", type=int, default=1, help="readers per case")
        parser.add_argument("--cases", type=int, default=None, help="at most this many cases")
        parser.add_argument("--no-manual", action="store_true", help="offer network masks only")
        parser.add_argument("--simulate", action="store_true", help="let the MDs decide (fake)")
        parser.add_argument("--seed", type=int, default=0)

    def handle(
        self, *args, dataset, mode, networks, readers, cases, no_manual, simulate, seed, **_
    ):
        found = Dataset.objects.filter(name=dataset).first()
        if found is None:
            names = ", ".join(Dataset.objects.values_list("name", flat=True)) or "none"
            raise CommandError(f"no dataset named {dataset!r} (datasets: {names})")
        if not 1 <= networks <= len(DEMO_NETWORKS):
            raise CommandError(f"--networks must be 1 to {len(DEMO_NETWORKS)}")
        if readers < 1:
            raise CommandError("--readers must be at least 1")
        if not found.radiographs.filter(label=Label.COVID, ground_truth__isnull=True).exists():
            raise CommandError(f"dataset {dataset!r} has no COVID-19 case without an accepted mask")
        stage = review_demo_stage(
            dataset=found,
            mode=mode,
            n_networks=networks,
            include_manual=not no_manual,
            readers_per_case=readers,
            max_cases=cases,
            seed=seed,
        )
        n_tasks = stage.tasks.count()
        self.stdout.write(
            f"Stage {stage.number} of {dataset!r} ({stage.get_mode_display()}): "
            f"{stage.candidates.count()} candidates, {n_tasks} review tasks."
        )
        if simulate:
            mds = list(get_user_model().objects.filter(groups__name=roles.MD).order_by("username"))
            if len(mds) < readers:
                raise CommandError(f"--simulate needs {readers} MD accounts, found {len(mds)}")
            decided = review_demo_simulate(stage=stage, readers=mds, seed=seed)
            self.stdout.write(f"Simulated {decided} decisions by {len(mds)} MD accounts.")
