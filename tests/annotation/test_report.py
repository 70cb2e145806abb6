"""The evaluation report of a detector run: tables, matrices, curves, CSV and HTML downloads."""

from __future__ import annotations

import csv
import io
import math
import re

import pytest
from django.urls import reverse

from annotation.models import Job
from annotation.selectors.report import detector_runs, run_report
from tests.annotation.detecting import (
    classifier_evaluation,
    counts,
    evaluation,
    registered_model,
)
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

FOLD_CASES = [counts(3, 1, 4, 1), counts(4, 0, 5, 0)]
FOLD_PIXELS = [counts(50, 10, 900, 40), counts(60, 20, 880, 40)]


def _ci(m: float, n: int) -> float:
    return 1.96 * math.sqrt(m * (1 - m) / n)


@pytest.fixture
def run(phantom_dataset):
    """Run r1: U-Net with both folds done, DLA with one of two, a classifier on both."""
    dataset, _ = phantom_dataset(n_covid=2, n_control=2)
    for fold, (case, pixel) in enumerate(zip(FOLD_CASES, FOLD_PIXELS, strict=True)):
        n_covid, n_control = case["tp"] + case["fn"], case["tn"] + case["fp"]
        truth = [1] * n_covid + [0] * n_control
        # COVID-19 cases found score 0.9, missed 0.3; controls flagged 0.6, cleared 0.1.
        scores = [0.9] * case["tp"] + [0.3] * case["fn"] + [0.6] * case["fp"] + [0.1] * case["tn"]
        metrics = {
            "evaluation": evaluation(
                pixel=pixel, case=case, truth=truth, max_probs=scores, ms=4.0 + fold
            )
        }
        registered_model(dataset, run="r1", fold=fold, metrics=metrics, params=(1234, 56))
        clf = classifier_evaluation(
            case=counts(n_covid, 1, n_control - 1, 0),
            truth=truth,
            probs=[0.8] * n_covid + [0.7] + [0.2] * (n_control - 1),
        )
        registered_model(
            dataset, run="r1", fold=fold, purpose="classifier", metrics={"evaluation": clf}
        )
    registered_model(dataset, run="r1", arch="dla", fold=0)
    registered_model(dataset, run="r1", arch="dla", fold=1, state=Job.State.RUNNING)
    return dataset


def test_scores_are_fold_means_with_the_papers_confidence_interval(run):
    report = run_report(run="r1")
    unet = next(n for n in report.networks if n.arch == "unet")
    sensitivity = (3 / 4 + 4 / 4) / 2
    assert unet.case.mean["sensitivity"].value == pytest.approx(sensitivity)
    # N of a fold-mean's CI: the test samples of the metric's denominator over all folds (8).
    assert unet.case.mean["sensitivity"].ci == pytest.approx(_ci(sensitivity, 8))
    pixel_precision = (50 / 60 + 60 / 80) / 2
    assert unet.pixel.mean["precision"].value == pytest.approx(pixel_precision)
    assert unet.pixel.cumulative_counts == unet.pixel.cumulative_counts.__class__(110, 30, 1780, 80)
    assert unet.ms_per_sample == pytest.approx(4.5)
    assert (unet.params_trainable, unet.params_non_trainable) == (1234, 56)
    # AUC = P(a COVID-19 case outscores a control): 7 at 0.9 beat all 10, 1 at 0.3 beats 9.
    assert unet.case_roc.auc == pytest.approx((7 * 10 + 9) / (8 * 10))
    dla = next(n for n in report.networks if n.arch == "dla")
    assert (dla.folds_done, dla.folds_total, dla.complete) == (1, 2, False)
    assert not report.complete and report.jobs == {"total": 6, "succeeded": 5, "running": 1}
    assert [c.label for c in report.classifiers] == ["Classifier · Tiny"]


def test_the_page_shows_the_tables_matrices_curves_and_costs(client, run):
    client.force_login(UserFactory(roles=["researcher"]))
    html = client.get(reverse("detector_report", args=["r1"])).content.decode()
    case_row = re.search(r'id="case-table".*?data-network="unet/tiny">(.*?)</tr>', html, re.S)[1]
    sensitivity = (3 / 4 + 1) / 2
    assert f"{100 * sensitivity:.2f} ± {100 * _ci(sensitivity, 8):.2f}" in case_row
    assert "2/2" in case_row
    dla_row = re.search(r'id="case-table".*?data-network="dla/tiny">(.*?)</tr>', html, re.S)[1]
    assert "1/2" in dla_row
    assert "the tables show the folds finished so far" in html
    matrix = re.search(r'class="matrix" data-network="unet/tiny">(.*?)</div>', html, re.S)[1]
    assert "1780" in matrix and "110" in matrix  # cumulative pixel matrix
    assert html.count("data:image/png;base64,") == 4  # pixel and case ROC and PR
    cost = re.search(r'id="cost-table".*?data-network="unet/tiny">(.*?)</tr>', html, re.S)[1]
    assert "1,234" in cost and "4.50" in cost
    assert "Deploy" not in html, "researchers read reports but do not deploy"


def test_the_csv_holds_every_fold_the_mean_and_the_cumulative_matrix(client, run):
    client.force_login(UserFactory(roles=["admin"]))
    response = client.get(reverse("detector_report_csv", args=["r1"]))
    assert response["Content-Disposition"] == 'attachment; filename="detector-report-r1.csv"'
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    case = {r["fold"]: r for r in rows if r["level"] == "case" and r["arch"] == "unet"}
    assert set(case) == {"0", "1", "mean", "cumulative"}
    assert int(case["0"]["tp"]) == 3 and int(case["1"]["tn"]) == 5
    assert float(case["cumulative"]["sensitivity"]) == pytest.approx(7 / 8)
    assert float(case["mean"]["sensitivity"]) == pytest.approx(0.875)
    assert float(case["mean"]["sensitivity_ci95"]) == pytest.approx(_ci(0.875, 8), abs=1e-6)
    assert float(case["cumulative"]["auc"]) > 0.5
    assert {r["level"] for r in rows} == {"pixel", "pixel_covid", "case", "classifier"}


def test_the_html_download_is_one_self_contained_file(client, run):
    client.force_login(UserFactory(roles=["admin"]))
    response = client.get(reverse("detector_report_html", args=["r1"]))
    html = response.content.decode()
    assert response["Content-Disposition"].startswith("attachment;")
    assert "<style>" in html and html.count("data:image/png;base64,") == 4
    assert not re.search(r'(src|href)="(?!data:)', html), "nothing may point outside the file"
    assert 'id="case-table"' in html and "Deploy" not in html


def test_the_job_poll_reloads_the_page_once_every_job_has_finished(client, run):
    client.force_login(UserFactory(roles=["admin"]))
    url = reverse("detector_report", args=["r1"]) + "?part=jobs&complete=0"
    running = client.get(url, headers={"HX-Request": "true"})
    assert (
        "HX-Refresh" not in running and "Detector U-Net · Tiny, fold 1" in running.content.decode()
    )
    Job.objects.filter(state=Job.State.RUNNING).update(state=Job.State.SUCCEEDED)
    assert client.get(url, headers={"HX-Request": "true"})["HX-Refresh"] == "true"


def test_runs_are_listed_with_their_progress(client, run):
    [summary] = detector_runs()
    assert (summary.run, summary.total, summary.done, summary.active) == ("r1", 6, 5, 1)
    client.force_login(UserFactory(roles=["researcher"]))
    html = client.get(reverse("detector_index")).content.decode()
    assert 'data-run="r1"' in html and "5 of 6" in html
    assert "Train detector" not in html


def test_mds_do_not_see_reports_and_unknown_runs_are_404(client, run):
    client.force_login(UserFactory(roles=["md"]))
    assert client.get(reverse("detector_report", args=["r1"])).status_code == 403
    assert client.get(reverse("detector_index")).status_code == 403
    client.force_login(UserFactory(roles=["admin"]))
    assert client.get(reverse("detector_report", args=["nope"])).status_code == 404


def test_a_fixed_split_run_reports_its_one_test_set(client, phantom_dataset):
    dataset, _ = phantom_dataset(n_covid=2, n_control=2)
    mv = registered_model(dataset, run="r2", fold=None, folds=1, protocol="split")
    client.force_login(UserFactory(roles=["admin"]))
    html = client.get(reverse("detector_report", args=["r2"])).content.decode()
    assert "fixed train/test split (Group II)" in html and "Detector U-Net · Tiny<" in html
    row = re.search(rf'data-model="{mv.pk}">(.*?)</tr>', html, re.S)[1]
    assert "test split" in row and "Deploy" in row
    rows = list(
        csv.DictReader(
            io.StringIO(client.get(reverse("detector_report_csv", args=["r2"])).content.decode())
        )
    )
    assert {r["fold"] for r in rows if r["level"] == "case"} == {"test", "mean", "cumulative"}
