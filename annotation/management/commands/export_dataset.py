"""python manage.py export_dataset --dataset NAME [...]: export the ground truth as a zip.

Runs the export here, not on a worker, and records it like one started from the browser: an
Export with its Job, listed on the exports page and downloadable there.
"""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from annotation.models import Dataset, Export
from annotation.services import jobs
from annotation.services.exports import (
    FORMATS,
    SPLITS,
    ExportCancelled,
    ExportError,
    export_build,
    export_request,
)


def _numbers(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise CommandError(f"--stages takes stage numbers like 1,2, not {text!r}") from exc


class Command(BaseCommand):
    help = (
        "Export a dataset's accepted masks: the QaTa-COV19 layout, COCO (RLE), manifests with "
        "provenance, a dataset card and SHA256SUMS, in one zip."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dataset", required=True, help="dataset name")
        parser.add_argument("--stages", help="stage numbers, e.g. 1,2 (default: every stage)")
        parser.add_argument(
            "--no-imported", action="store_true", help="leave out masks imported as final"
        )
        parser.add_argument(
            "--controls",
            action="store_true",
            help="include cases not labelled COVID-19, with empty masks",
        )
        parser.add_argument(
            "--formats",
            default=",".join(FORMATS),
            help=f"comma-separated, of {', '.join(FORMATS)} (default: all)",
        )
        parser.add_argument("--split", default="none", choices=SPLITS)
        parser.add_argument("--folds", type=int, default=5, help="with --split kfold")
        parser.add_argument("--seed", type=int, default=0, help="with --split kfold")
        parser.add_argument(
            "--licence", default="", help="the export's licence (default: the dataset's)"
        )
        parser.add_argument("--citation", default="")
        parser.add_argument("--user", help="username recorded as the export's author")
        parser.add_argument("--output", type=Path, help="also copy the zip to this path")

    def handle(self, *args, **options) -> None:
        dataset = Dataset.objects.filter(name=options["dataset"]).first()
        if dataset is None:
            raise CommandError(f"dataset {options['dataset']!r} does not exist")
        user = None
        if options["user"]:
            user = get_user_model().objects.filter(username=options["user"]).first()
            if user is None:
                raise CommandError(f"user {options['user']!r} does not exist")
        output = options["output"]
        if output is not None and not output.parent.is_dir():
            raise CommandError(f"--output: folder {output.parent} does not exist")
        try:
            export = export_request(
                dataset=dataset,
                created_by=user,
                stages=_numbers(options["stages"]) if options["stages"] else None,
                include_imported=not options["no_imported"],
                include_controls=options["controls"],
                formats=[f.strip() for f in options["formats"].split(",") if f.strip()],
                split=options["split"],
                folds=options["folds"],
                seed=options["seed"],
                licence=options["licence"],
                citation=options["citation"],
                enqueue=False,
            )
        except ExportError as exc:
            raise CommandError(str(exc)) from exc
        export = self._run(export)
        if output is not None:
            with export.file.open("rb") as source, open(output, "wb") as target:
                shutil.copyfileobj(source, target, 1 << 20)
        self.stdout.write(
            f"Export #{export.pk}: {export.n_cases} cases, {export.size:,} bytes\n"
            f"  file    {export.file.name}" + (f" (copied to {output})" if output else "") + "\n"
            f"  sha256  {export.sha256}"
        )

    def _run(self, export: Export) -> Export:
        job_id = export.job_id
        if jobs.job_claim(job_id=job_id, worker=f"export_dataset@{socket.gethostname()}") is None:
            raise CommandError(f"job #{job_id} of export #{export.pk} could not be claimed")
        stream = getattr(self.stderr, "_out", self.stderr)
        bar = tqdm(unit="case", file=stream, dynamic_ncols=True)
        last = [0.0]

        def progress(done: int, total: int) -> bool:
            bar.total = total
            bar.update(done - bar.n)
            if time.monotonic() - last[0] < 1.0 and done < total:
                return False
            last[0] = time.monotonic()
            return jobs.job_progress(
                job_id=job_id,
                progress=0.98 * done / total,
                detail={"cases_done": done, "cases_total": total},
            )

        try:
            result = export_build(export=export, progress=progress)
        except ExportCancelled as exc:
            jobs.job_mark_cancelled(job_id=job_id)
            raise CommandError(f"export #{export.pk} was cancelled") from exc
        except (Exception, KeyboardInterrupt) as exc:
            jobs.job_fail(job_id=job_id, error=f"{type(exc).__name__}: {exc}")
            if isinstance(exc, ExportError):
                raise CommandError(str(exc)) from exc
            raise
        finally:
            bar.close()
        jobs.job_succeed(job_id=job_id, result=result)
        export.refresh_from_db()
        return export
