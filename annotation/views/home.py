from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from annotation.roles import sees_provenance
from annotation.selectors.datasets import dataset_overview
from annotation.selectors.worklist import reader_waiting


@login_required
def home(request):
    # Readers see no count of manual masks: blinding starts on the home page.
    provenance = sees_provenance(request.user)
    return render(
        request,
        "home.html",
        {
            "datasets": dataset_overview(with_provenance=provenance),
            "provenance": provenance,
            # What waits for a reader, per stage (an account that sees provenance gets none).
            "waiting": None if provenance else reader_waiting(reader=request.user),
        },
    )
