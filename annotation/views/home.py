from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from annotation.selectors.datasets import dataset_overview


@login_required
def home(request):
    return render(request, "home.html", {"datasets": dataset_overview()})
