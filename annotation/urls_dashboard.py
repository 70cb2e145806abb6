from django.urls import path

from annotation.views import dashboard, flags

urlpatterns = [
    path("dashboard/", dashboard.dashboard, name="dashboard"),
    path("dashboard/upload", dashboard.upload, name="dashboard_upload"),
    path(
        "dashboard/datasets/<int:dataset_id>/stages/new",
        dashboard.stage_new,
        name="dashboard_stage_new",
    ),
    path("dashboard/stages/<int:stage_id>/", dashboard.stage_detail, name="dashboard_stage"),
    path(
        "dashboard/stages/<int:stage_id>/launch",
        dashboard.stage_launch_view,
        name="dashboard_stage_launch",
    ),
    path(
        "dashboard/stages/<int:stage_id>/interactive",
        dashboard.stage_interactive_view,
        name="dashboard_stage_interactive",
    ),
    path(
        "dashboard/stages/<int:stage_id>/cancel",
        dashboard.stage_cancel_view,
        name="dashboard_stage_cancel",
    ),
    path("dashboard/flags", flags.flags_page, name="dashboard_flags"),
    path(
        "dashboard/flags/<int:flag_id>/resolve",
        flags.flag_resolve_view,
        name="dashboard_flag_resolve",
    ),
    path("dashboard/jobs/<int:job_id>/", dashboard.job_detail, name="dashboard_job"),
    path(
        "dashboard/jobs/<int:job_id>/<str:action>",
        dashboard.job_action,
        name="dashboard_job_action",
    ),
]
