"""/api/: the REST API (DRF), its OpenAPI 3 schema and the browsable docs."""

from __future__ import annotations

from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from annotation.api.base import TokenView, not_found
from annotation.api.views_data import DatasetViewSet, GroundTruthViewSet, RadiographViewSet
from annotation.api.views_exports import ExportViewSet
from annotation.api.views_jobs import JobViewSet, StageViewSet

app_name = "api"

router = DefaultRouter()
router.include_root_view = False
router.register("datasets", DatasetViewSet, basename="dataset")
router.register("radiographs", RadiographViewSet, basename="radiograph")
router.register("ground-truths", GroundTruthViewSet, basename="groundtruth")
router.register("stages", StageViewSet, basename="stage")
router.register("jobs", JobViewSet, basename="job")
router.register("exports", ExportViewSet, basename="export")

urlpatterns = [
    path("auth/token/", TokenView.as_view(), name="token"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
    path("docs/redoc/", SpectacularRedocView.as_view(url_name="api:schema"), name="redoc"),
    # Review API for MDs (next task, decide with an idempotency key; no provenance) and the
    # inference endpoint (CXR upload -> infection map, verdict, severity) are mounted here:
    #   path("review/", include("annotation.api.review_urls")),
    #   path("inference/", include("annotation.api.inference_urls")),
    path("", include(router.urls)),
    re_path(r"^(?P<path>[\s\S]*)$", not_found),  # keep last
]
