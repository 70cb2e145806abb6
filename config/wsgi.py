import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
application = get_wsgi_application()

# Import every view now, while the worker starts, rather than on its first request (which would
# otherwise wait most of a second for the URL configuration and the modules behind it).
from django.urls import get_resolver  # noqa: E402

get_resolver().url_patterns  # noqa: B018
