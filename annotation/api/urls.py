"""/api/: the REST API (DRF), its OpenAPI 3 schema and the browsable docs."""

from __future__ import annotations

from csp.constants import UNSAFE_INLINE
from csp.decorators import csp_update
from django.urls import include, path, re_path
from drf_spectacular.views import (
    SpectacularAPIView,
    SpectacularRedocView,
    SpectacularSwaggerSplitView,
)
from rest_framework.routers import DefaultRouter

from annotation.api import views_refine as refine
from annotation.api import views_review as review
from annotation.api import views_review_screen as review_screen
from annotation.api import views_worklist as worklist
from annotation.api.base import TokenView, not_found
from annotation.api.views_data import DatasetViewSet, GroundTruthViewSet, RadiographViewSet
from annotation.api.views_exports import ExportViewSet
from annotation.api.views_inference import InferenceViewSet
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
router.register("inference", InferenceViewSet, basename="inference")

# The review API for MDs and senior MDs (and the review screens' JavaScript): no provenance,
# decisions with idempotency keys.
review_urls = [
    path("stages/", review.QueueView.as_view(), name="review-queue"),
    path("stages/<int:stage_id>/next/", review.NextView.as_view(), name="review-next"),
    path("stages/<int:stage_id>/undo/", review.UndoView.as_view(), name="review-undo"),
    path("tasks/<str:token>/", review.TaskView.as_view(), name="review-task"),
    path("tasks/<str:token>/round/", review.RoundView.as_view(), name="review-round"),
    path("tasks/<str:token>/round/undo/", review.RoundUndoView.as_view(), name="review-round-undo"),
    path("tasks/<str:token>/pick/", review.PickView.as_view(), name="review-pick"),
    path("tasks/<str:token>/drawing/", review.DrawingView.as_view(), name="review-drawing"),
    path("tasks/<str:token>/refine/", refine.RefineView.as_view(), name="review-refine"),
    path("tasks/<str:token>/keep/", review_screen.KeepView.as_view(), name="review-keep"),
    path("tasks/<str:token>/ahead/", review_screen.AheadView.as_view(), name="review-ahead"),
    path("tasks/<str:token>/draft/", review_screen.DraftView.as_view(), name="review-draft"),
    path("stages/<int:stage_id>/cases/", worklist.CasesView.as_view(), name="review-cases"),
    path("tasks/<str:token>/reopen/", worklist.ReopenView.as_view(), name="review-reopen"),
    path("tasks/<str:token>/flag/", worklist.FlagView.as_view(), name="review-flag"),
    path("tasks/<str:token>/skip/", worklist.SkipView.as_view(), name="review-skip"),
    path("images/<str:token>.png", review.ImageView.as_view(), name="review-image"),
    path("masks/<str:opaque>.png", review.MaskView.as_view(), name="review-mask"),
]

urlpatterns = [
    path("auth/token/", TokenView.as_view(), name="token"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    # Swagger UI's set-up script is served by the same view (?script), not inlined.
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api:schema"), name="docs"),
    # Redoc styles its page with <style> elements it makes at run time; scripts stay 'self'.
    path(
        "docs/redoc/",
        csp_update({"style-src": [UNSAFE_INLINE]})(
            SpectacularRedocView.as_view(url_name="api:schema")
        ),
        name="redoc",
    ),
    path("review/", include(review_urls)),
    path("", include(router.urls)),
    re_path(r"^(?P<path>[\s\S]*)$", not_found),  # keep last
]
