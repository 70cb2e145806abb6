"""The final detector (launch, report, deploy), the infection-map viewer and the case browser.

Included from annotation/urls.py: path("", include("annotation.urls_detector")).
"""

from django.urls import path

from annotation.views import cases, detector, viewer

urlpatterns = [
    # detector runs: admins launch and deploy; admins and researchers read the reports
    path("detector/", detector.detector_index, name="detector_index"),
    path("detector/datasets/<int:dataset_id>/new", detector.detector_new, name="detector_new"),
    path("detector/runs/<str:run>/", detector.detector_report, name="detector_report"),
    path(
        "detector/runs/<str:run>/report.csv",
        detector.detector_report_csv,
        name="detector_report_csv",
    ),
    path(
        "detector/runs/<str:run>/report.html",
        detector.detector_report_html,
        name="detector_report_html",
    ),
    path(
        "detector/runs/<str:run>/ensemble",
        detector.detector_ensemble_view,
        name="detector_ensemble",
    ),
    path(
        "detector/models/<int:model_id>/deploy",
        detector.detector_deploy_view,
        name="detector_deploy",
    ),
    # infection-map viewer and live inference (admins, researchers)
    path("viewer/", viewer.upload, name="viewer_upload"),
    path("viewer/jobs/<int:job_id>/", viewer.job_view, name="viewer_job"),
    path("viewer/jobs/<int:job_id>/<str:name>.png", viewer.job_image, name="viewer_image"),
    # the case browser (admins, researchers; no detector needed)
    path("viewer/datasets/<int:dataset_id>/", cases.case_list, name="viewer_cases"),
    path("cases/<int:radiograph_id>/", cases.case_page, name="case_detail"),
    path("cases/<int:radiograph_id>/image.png", cases.case_image, name="case_image"),
    path("cases/masks/<int:mask_id>.png", cases.case_mask, name="case_mask"),
    path("viewer/cases/<int:radiograph_id>/", viewer.case_view, name="viewer_case"),
    path("viewer/cases/<int:radiograph_id>/retry", viewer.case_retry, name="viewer_case_retry"),
]
