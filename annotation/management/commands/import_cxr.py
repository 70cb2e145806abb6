"""python manage.py import_cxr PATH [PATH ...] --dataset NAME: import CXRs and manual masks."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from annotation.models import Dataset, Label
from annotation.services.datasets import DatasetError, dataset_licence_check, dataset_licence_set
from annotation.services.imports import ImportInputError, ImportReport, cxr_import


class Command(BaseCommand):
    help = (
        "Import chest X-rays from folders or zip archives of PNG / JPEG / DICOM files, "
        "including the QaTa-COV19 layouts (Images/ + Ground-truths/, Train Set/ + Test Set/); "
        "masks named mask_<image file name> become manual masks."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("paths", nargs="+", metavar="PATH", help="folder, zip or file")
        parser.add_argument("--dataset", required=True, help="dataset name")
        parser.add_argument(
            "--create-dataset", action="store_true", help="create the dataset if it does not exist"
        )
        parser.add_argument(
            "--label",
            default=Label.COVID,
            choices=Label.values,
            help="label of every image not listed in a labels.csv (default: covid)",
        )
        parser.add_argument(
            "--strict", action="store_true", help="exit non-zero when any file is rejected"
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="decode and check everything, change nothing"
        )
        parser.add_argument(
            "--mask-max-side",
            type=int,
            default=None,
            metavar="N",
            help="working resolution of masks (longer side, pixels) for a new or empty dataset",
        )
        parser.add_argument(
            "--licence",
            metavar="TEXT",
            help="the dataset's licence, named by its exports (e.g. 'CC BY 4.0' or a URL)",
        )

    def handle(self, *args, **options) -> None:
        if options["licence"] is not None:
            try:
                dataset_licence_check(options["licence"])
            except DatasetError as exc:
                raise CommandError(f"--licence: {exc}") from exc
        dataset = self._dataset(options)
        stream = getattr(self.stderr, "_out", self.stderr)
        bars: list[tqdm] = []  # made on the first case, once the total is known

        def progress(done: int, total: int, where: str) -> None:
            if not bars:
                bars.append(tqdm(total=total, unit="case", file=stream, dynamic_ncols=True))
            bars[0].set_postfix_str(where[-40:], refresh=False)
            bars[0].update(done - bars[0].n)

        try:
            report = cxr_import(
                dataset=dataset,
                paths=options["paths"],
                dry_run=options["dry_run"],
                label=options["label"],
                progress=progress,
            )
        except ImportInputError as exc:
            raise CommandError(str(exc)) from exc
        finally:
            for bar in bars:
                bar.close()
        if options["licence"] is not None and not options["dry_run"]:
            dataset_licence_set(dataset=dataset, licence=options["licence"])
            self.stdout.write(f"Licence of {dataset.name!r}: {dataset.licence or '(none)'}")
        self._summary(report)
        if report.nothing_imported and (report.rejected or report.skipped):
            # Every file refused (or none was an image): a failure, whatever --strict says.
            raise CommandError(report.failure_message().splitlines()[0])
        if options["strict"] and report.rejected:
            raise CommandError(f"{len(report.rejected)} file(s) rejected (--strict)")

    def _dataset(self, options) -> Dataset:
        name, max_side = options["dataset"], options["mask_max_side"]
        if max_side is not None and max_side < 16:
            raise CommandError("--mask-max-side must be at least 16")
        dataset = Dataset.objects.filter(name=name).first()
        if dataset is None:
            if not options["create_dataset"]:
                raise CommandError(f"dataset {name!r} does not exist; add --create-dataset")
            dataset = Dataset(name=name)
            if max_side is not None:
                dataset.mask_max_side = max_side
            if not options["dry_run"]:  # a dry run imports into an unsaved dataset
                dataset.save()
            return dataset
        if max_side is not None and max_side != dataset.mask_max_side:
            if dataset.radiographs.exists():
                raise CommandError(
                    f"dataset {name!r} already has radiographs at mask_max_side="
                    f"{dataset.mask_max_side}; it cannot change to {max_side}"
                )
            dataset.mask_max_side = max_side
            if not options["dry_run"]:
                dataset.save(update_fields=["mask_max_side"])
        return dataset

    def _summary(self, report: ImportReport) -> None:
        out = self.stdout
        title = f"Import into dataset {report.dataset!r}"
        out.write(title + (" (dry run: nothing was changed)" if report.dry_run else ""))
        verb = "would be imported" if report.dry_run else "imported"
        rows = [
            (f"radiographs {verb}", len(report.imported)),
            ("duplicates (already there)", len(report.duplicates)),
            (f"manual masks {verb}", len(report.masks_imported)),
            ("duplicate masks", len(report.mask_duplicates)),
            ("skipped (not images)", len(report.skipped)),
            ("rejected", len(report.rejected)),
        ]
        width = max(len(label) for label, _ in rows)
        for label, count in rows:
            out.write(f"  {label:<{width}}  {count:>7}")
        if report.rejected:
            out.write("Rejected files:")
            name_width = min(60, max(len(r.name) for r in report.rejected))
            for rejection in report.rejected:
                out.write(f"  {rejection.name:<{name_width}}  {rejection.reason}")
