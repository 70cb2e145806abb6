from django.urls import include, path

from annotation.views import exports, review, review_media, stats, worklist

urlpatterns: list = [
    # review screens (MDs, senior MDs); their JavaScript acts through the review API (/api/review/)
    path("review/", review.queue, name="review_queue"),
    path("review/s/<int:stage_id>/next", review.next_task, name="review_next"),
    path(
        "review/s/<int:stage_id>/adjudicate",
        review.next_adjudication,
        name="review_adjudicate_next",
    ),
    path("review/s/<int:stage_id>/undo", review.undo_submit, name="review_undo"),
    path("review/t/<str:token>/", review.task_view, name="review_task"),
    path("review/t/<str:token>/round", review.round_submit, name="review_round"),
    path("review/t/<str:token>/round/undo", review.round_undo_submit, name="review_round_undo"),
    path("review/t/<str:token>/pick", review.pick_submit, name="review_pick"),
    path("review/t/<str:token>/draw", review.draw_view, name="review_draw"),
    path("review/t/<str:token>/progress", review.progress, name="review_progress"),
    # a reader's decided cases (reopen one), and flagging or skipping a case
    path("review/s/<int:stage_id>/cases", worklist.cases, name="review_cases"),
    path("review/t/<str:token>/reopen", worklist.reopen_submit, name="review_reopen"),
    path("review/t/<str:token>/flag", worklist.flag_submit, name="review_flag"),
    path("review/t/<str:token>/skip", worklist.skip_submit, name="review_skip"),
    # images by opaque, access-checked names
    path("review/m/<str:opaque>.png", review_media.mask_png, name="review_mask"),
    path("review/i/<str:token>.png", review_media.image_png, name="review_image"),
    path("review/c/<str:token>.png", review_media.consensus_png, name="review_consensus"),
    path("review/signed-in", review.signed_in, name="review_signed_in"),
    # stage statistics (admins, researchers)
    path("stats/", stats.index, name="stats_index"),
    path("stats/s/<int:stage_id>/", stats.stage, name="stats_stage"),
    path("stats/s/<int:stage_id>/<slug:table>.csv", stats.stage_csv, name="stats_stage_csv"),
    # exports (researchers, admins)
    path("exports/", exports.exports_page, name="exports"),
    path("exports/<int:pk>/row", exports.export_row, name="export_row"),
    path("exports/<int:pk>/download", exports.export_file, name="export_download"),
    # admin dashboard: datasets, stages, jobs, workers
    path("", include("annotation.urls_dashboard")),
    # final detector (runs, reports, deploy) and infection-map viewer
    path("", include("annotation.urls_detector")),
]
