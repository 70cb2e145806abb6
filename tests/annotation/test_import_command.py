"""python manage.py import_cxr: progress bar, summary table, --strict, --dry-run, datasets."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from annotation.models import Dataset, Radiograph
from tests.annotation import cxrfiles
from tests.annotation.importing import state, write_case
from tests.factories import DatasetFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "QaTa"
    write_case(root / "Train Set", "covid_1.png", size=(64, 64), seed=1, masks="Ground-truths")
    write_case(root / "Test Set", "covid_2.png", size=(70, 64), seed=2, masks="Ground-truths")
    (root / "Train Set" / "Images" / "notes.png").write_text("not an image")
    return root


def run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("import_cxr", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_it_shows_progress_then_a_summary_with_rejected_files(folder):
    out, err = run(str(folder), "--dataset", "qata", "--create-dataset", "--mask-max-side", "32")
    assert "3/3" in err and "case" in err  # the tqdm bar, on stderr
    lines = out.splitlines()
    assert lines[0] == "Import into dataset 'qata'"
    assert any(line.split() == ["radiographs", "imported", "2"] for line in lines)
    assert any(line.split() == ["manual", "masks", "imported", "2"] for line in lines)
    assert any(line.split() == ["rejected", "1"] for line in lines)
    assert "QaTa/Train Set/Images/notes.png" in out
    assert "content is not a PNG, JPEG or DICOM image" in out
    dataset = Dataset.objects.get(name="qata")
    assert dataset.mask_max_side == 32
    assert {r.work_width for r in Radiograph.objects.all()} <= {32, 29}


def test_strict_makes_a_rejection_an_error(folder):
    with pytest.raises(CommandError, match=r"1 file\(s\) rejected \(--strict\)"):
        run(str(folder), "--dataset", "qata", "--create-dataset", "--strict")
    # The good files were still imported; --strict changes the exit status only.
    assert Radiograph.objects.count() == 2


def test_strict_passes_when_nothing_is_rejected(folder):
    (folder / "Train Set" / "Images" / "notes.png").unlink()
    out, _ = run(str(folder), "--dataset", "qata", "--create-dataset", "--strict")
    assert "rejected" in out and Radiograph.objects.count() == 2


def test_dry_run_changes_nothing_not_even_the_dataset(folder):
    before = state()
    out, _ = run(str(folder), "--dataset", "new", "--create-dataset", "--dry-run")
    assert "dry run: nothing was changed" in out
    assert any(line.split() == ["radiographs", "would", "be", "imported", "2"]
               for line in out.splitlines())  # fmt: skip
    assert state() == before


def test_reimport_reports_duplicates(folder):
    run(str(folder), "--dataset", "qata", "--create-dataset")
    before = state()
    out, _ = run(str(folder), "--dataset", "qata")
    assert any(line.split()[-1:] == ["2"] and "duplicates" in line for line in out.splitlines())
    assert state() == before


def test_an_unknown_dataset_needs_create_dataset(folder):
    with pytest.raises(CommandError, match="dataset 'nope' does not exist; add --create-dataset"):
        run(str(folder), "--dataset", "nope")


def test_a_missing_path_is_an_error(folder, tmp_path):
    with pytest.raises(CommandError, match="not found: .*missing"):
        run(str(folder), str(tmp_path / "missing"), "--dataset", "x", "--create-dataset")
    assert Radiograph.objects.count() == 0


def test_the_working_resolution_of_a_filled_dataset_cannot_change(folder):
    DatasetFactory(name="qata", mask_max_side=64)
    run(str(folder), "--dataset", "qata")
    with pytest.raises(CommandError, match="already has radiographs at mask_max_side=64"):
        run(str(folder), "--dataset", "qata", "--mask-max-side", "128")


def test_label_applies_to_every_file(tmp_path):
    (tmp_path / "n.png").write_bytes(cxrfiles.png8())
    run(str(tmp_path / "n.png"), "--dataset", "d", "--create-dataset", "--label", "normal")
    assert Radiograph.objects.get().label == "normal"
    with pytest.raises(CommandError, match="invalid choice"):
        run(str(tmp_path / "n.png"), "--dataset", "d", "--label", "sick")


def test_an_import_where_every_file_is_rejected_fails_without_strict(tmp_path):
    folder = tmp_path / "junk"
    folder.mkdir()
    (folder / "a.png").write_text("not an image")
    (folder / "b.dcm").write_bytes(b"\0" * 200)
    with pytest.raises(CommandError, match=r"nothing imported: 2 files rejected"):
        run(str(folder), "--dataset", "junk", "--create-dataset")
    assert Radiograph.objects.count() == 0
