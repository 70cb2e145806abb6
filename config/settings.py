"""collabmask settings, read from the environment.

Two modes:
- embedded (default): one machine, no set-up. SQLite and media in the data directory (var/ in
  a checkout, the user's data directory for an installed package: config/datadir.py), an
  embedded Redis on a unix socket that `collabmask start` (`make run`) starts, a secret key
  generated once in the data directory.
- production: every secret and host must be given; nothing is generated.
"""

from __future__ import annotations

import os
import secrets
from datetime import timedelta
from pathlib import Path

import dj_database_url
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured
from whitenoise.compress import Compressor

from config.datadir import data_dir
from config.env import env_bool, env_choice, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = data_dir()
MODE = env_choice("COLLABMASK_MODE", "embedded", ("embedded", "production"))
EMBEDDED = MODE == "embedded"

if EMBEDDED:
    # Secrets, the database, the broker's files and uploads are this user's alone: the umask
    # holds for every file the web, worker and Redis processes create here.
    os.umask(0o077)
    VAR_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    VAR_DIR.chmod(0o700)


def _kept_secret(name: str) -> str:
    """A secret from the environment; in embedded mode generated once, kept in the data dir."""
    value = env_str(name)
    if value:
        return value
    if not EMBEDDED:
        raise ImproperlyConfigured(
            f"{name} (or {name}_FILE) is required when COLLABMASK_MODE=production"
        )
    path = VAR_DIR / name.lower()
    try:
        # Created readable by this user only, never for a moment by others.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        path.chmod(0o600)
    else:
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(50))
    return path.read_text().strip()


SECRET_KEY = _kept_secret("SECRET_KEY")
# Salt of the one-way patient key: changing it splits one patient into two keys, so keep it.
PATIENT_KEY_SALT = _kept_secret("PATIENT_KEY_SALT")
DEBUG = env_bool("DEBUG", False)

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost"] if EMBEDDED else [])
if not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS is required when COLLABMASK_MODE=production")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    # First, so its templates (registration/, drf_spectacular/, admin/) override the others'.
    "annotation",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "template_partials",
    "axes",
    "auditlog",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "annotation.views.health.LivenessMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "csp.middleware.CSPMiddleware",
    "annotation.sessions.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    # Before CSRF, which reads a form body: an oversized body is refused unread.
    "annotation.middleware.RequestBodyLimitMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "annotation.middleware.AuditMiddleware",
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # Templates are package data of the app (annotation/templates/), so a wheel carries them.
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "annotation.context_processors.roles",
            ],
        },
    },
]

# --- database ---------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'db.sqlite3'}"
try:
    _db = dj_database_url.parse(
        DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 60, minimum=0)
    )
except (ValueError, KeyError) as exc:
    raise ImproperlyConfigured(f"DATABASE_URL cannot be parsed: {exc}") from exc
if _db["ENGINE"] not in ("django.db.backends.sqlite3", "django.db.backends.postgresql"):
    raise ImproperlyConfigured(
        f"DATABASE_URL must be sqlite:// or postgres://, not {_db['ENGINE']}"
    )
# Connections are kept between requests (each web thread keeps its own, checked before reuse):
# opening one costs more than the queries of an image request, on SQLite (the connection, its
# SQL functions, the WAL pragmas) as on PostgreSQL.
_db["CONN_HEALTH_CHECKS"] = True
if _db["ENGINE"] == "django.db.backends.sqlite3":
    # IMMEDIATE transactions and WAL let web and worker processes write without "database is locked".
    _db["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    _db.setdefault("TEST", {})["NAME"] = str(VAR_DIR / "test-db.sqlite3")
elif env_bool("DB_PREPARED_STATEMENTS", True):
    # PostgreSQL parses and plans every statement it is sent; with parameters bound on the
    # server, psycopg prepares a statement once a connection has run it 5 times, and the
    # server then only executes it (the review path repeats the same few dozen statements).
    # Off (DB_PREPARED_STATEMENTS=0) behind a pooler in transaction mode that cannot keep
    # prepared statements (PgBouncer before 1.21, or without max_prepared_statements).
    _db.setdefault("OPTIONS", {}).update(server_side_binding=True, prepare_threshold=5)
DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- broker -----------------------------------------------------------------
EMBEDDED_REDIS_SOCKET = VAR_DIR / "redis.sock"
REDIS_URL = env_str("REDIS_URL") or f"redis+socket://{EMBEDDED_REDIS_SOCKET}"
if not REDIS_URL.startswith(("redis://", "rediss://", "redis+socket://")):
    raise ImproperlyConfigured(
        f"REDIS_URL must be redis://, rediss:// or redis+socket://, not {REDIS_URL!r}"
    )

CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = None  # job state lives in the Job table
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# Each job kind is sent to its queue by annotation.services.jobs (TASKS, the one routing
# table); the periodic sweep goes to the default queue.
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Longer than the longest training job, so an unacknowledged task is not handed out twice.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 43200)
}
CELERY_WORKER_SEND_TASK_EVENTS = True
# Click-to-refine: how long the web process waits for the interactive worker's answer (seconds)
# before telling the reader it did not come (503).
INTERACTIVE_TIMEOUT_S = env_int("INTERACTIVE_TIMEOUT_S", 10, minimum=1)
CELERY_IMPORTS = ["annotation.worker.runner"]
# Jobs whose worker vanished run again; stages whose jobs finished move on.
CELERY_BEAT_SCHEDULE = {
    "sweep-jobs-and-stages": {"task": "annotation.worker.sweep", "schedule": 60.0},
}

# --- storage ----------------------------------------------------------------
MEDIA_ROOT = Path(env_str("MEDIA_ROOT") or VAR_DIR / "media")
MEDIA_URL = "/media/"  # never served directly: files go through access-checked views
STATIC_URL = "/static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT") or VAR_DIR / "static")
# Static files are package data of the app (annotation/static/), found by the app finder.
WHITENOISE_USE_FINDERS = True
if EMBEDDED:
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)

MEDIA_S3_BUCKET = env_str("MEDIA_S3_BUCKET")
if MEDIA_S3_BUCKET:
    _media_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": MEDIA_S3_BUCKET,
            "endpoint_url": env_str("MEDIA_S3_ENDPOINT_URL"),
            "region_name": env_str("MEDIA_S3_REGION"),
            "access_key": env_str("MEDIA_S3_ACCESS_KEY_ID"),
            "secret_key": env_str("MEDIA_S3_SECRET_ACCESS_KEY"),
            "location": env_str("MEDIA_S3_PREFIX", "") or "",
            "default_acl": None,
            "querystring_auth": True,
            "file_overwrite": False,
        },
    }
else:
    _media_storage = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {
            "location": str(MEDIA_ROOT),
            "file_permissions_mode": 0o600 if EMBEDDED else 0o640,
            "directory_permissions_mode": 0o700 if EMBEDDED else 0o750,
        },
    }
# Collected static files (collectstatic): names carry a content hash, so browsers keep them for
# good (WhiteNoise sends max-age of ten years, immutable), and every file has gzip and Brotli
# versions beside it that WhiteNoise serves by Accept-Encoding. The production image collects
# them at build time and `collabmask start` at each start; without a collection (tests, a bare
# runserver) the files are served as they are found in the app, uncompressed and unhashed.
STATIC_COLLECTED = env_bool("STATIC_COLLECTED", not EMBEDDED)
# Only the hashed names are compressed and kept (the finders still serve the plain names); source
# maps, which only developer tools fetch, are not compressed.
WHITENOISE_KEEP_ONLY_HASHED_FILES = True
WHITENOISE_SKIP_COMPRESS_EXTENSIONS = (
    *Compressor.SKIP_COMPRESS_EXTENSIONS,
    "map",
)
STORAGES = {
    "default": _media_storage,
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if STATIC_COLLECTED
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        ),
        # Embedded: the data directory is its user's alone, collected files included.
        "OPTIONS": (
            {"file_permissions_mode": 0o600, "directory_permissions_mode": 0o700}
            if EMBEDDED
            else {}
        ),
    },
}

# --- auth -------------------------------------------------------------------
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"
AUTHENTICATION_BACKENDS = [
    # First: refuses every attempt on a locked-out user name before the password is checked.
    "annotation.authentication.LockoutBackend",
    # Django's password check; the signed-in user is read with one written-out statement.
    "annotation.authentication.UserBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "annotation.api.authentication.ExpiringTokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "collabmask API",
    "DESCRIPTION": "Ground-truth COVID-19 infection masks for chest X-rays, built with medical doctors.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}
# An API token stops working this long after it was issued; a new POST to /api/auth/token/
# issues a fresh one, DELETE revokes it.
TOKEN_TTL = timedelta(hours=env_int("TOKEN_TTL_HOURS", 7 * 24, minimum=1))

# --- import limits ------------------------------------------------------------
# Largest image accepted, in pixels: guards against decompression bombs.
IMPORT_MAX_PIXELS = env_int("IMPORT_MAX_PIXELS", 64 * 1024 * 1024, minimum=1)
# Largest single file accepted, in bytes.
IMPORT_MAX_FILE_BYTES = env_int("IMPORT_MAX_FILE_BYTES", 512 * 1024 * 1024, minimum=1)

# --- request bodies -------------------------------------------------------------
# Checked on Content-Length before a byte of the body is read (annotation.middleware); a
# route that takes more says so with @body_limit (the CXR upload takes IMPORT_MAX_FILE_BYTES).
REQUEST_MAX_BYTES = env_int("REQUEST_MAX_BYTES", 64 * 1024 * 1024, minimum=1024)
# Form fields (not files) held in memory (also the largest CXR the infection-map viewer
# takes), and the size above which an uploaded file goes to a temporary file, not memory.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 32 * 1024 * 1024, minimum=1)
FILE_UPLOAD_MAX_MEMORY_SIZE = env_int(
    "FILE_UPLOAD_MAX_MEMORY_SIZE", 5 * 1024 * 1024 // 2, minimum=1
)
FILE_UPLOAD_HANDLERS = [
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "django.core.files.uploadhandler.TemporaryFileUploadHandler",
]

# --- security -----------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # htmx reads the token from the page, not the cookie
# Idle timeout: every request moves the expiry on, so a session ends this long after its last use
# (to within a minute: annotation.sessions writes the session again only once it lags that much,
# not on every request).
SESSION_ENGINE = "annotation.sessions"
SESSION_COOKIE_AGE = env_int("SESSION_IDLE_MINUTES", 8 * 60, minimum=1) * 60
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if not EMBEDDED:
    SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", True)
    CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    # The health probe comes from inside the deployment, over plain HTTP.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 365 * 24 * 3600, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)

# Scripts and styles only from our own static files: no inline script, no outside host. The
# review screen's speculation rules (prerender the next case: JSON, never run) are let through.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, "'inline-speculation-rules'"],
        "style-src": [SELF],
        "img-src": [SELF, "data:", "blob:"],
        "font-src": [SELF],
        "connect-src": [SELF],
        "worker-src": [SELF, "blob:"],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}

# Brute force: after LOGIN_FAILURE_LIMIT wrong passwords in a row for one user name (or from
# one address), the login form and /api/auth/token/ refuse it, right password included, for
# LOGIN_COOLOFF_MINUTES, or until an admin unlocks it (/admin/axes/accessattempt/, or
# `manage.py axes_reset_username NAME`).
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_COOLOFF_MINUTES", 15, minimum=1))
# What a lock-out is counted by: each user name, and each client address (password spraying
# tries many names from one address). Behind a reverse proxy, set TRUSTED_PROXY_COUNT so the
# address is the client's, not the proxy's (else one address locks out everyone behind it).
AXES_LOCKOUT_PARAMETERS = env_list("LOGIN_LOCKOUT_BY", ["ip_address", "username"])
if not AXES_LOCKOUT_PARAMETERS or set(AXES_LOCKOUT_PARAMETERS) - {"ip_address", "username"}:
    raise ImproperlyConfigured("LOGIN_LOCKOUT_BY must list ip_address and/or username")
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0, minimum=0)
# One rule for the client's address: the lock-out, the audit trail and the admin's change
# history all take it from annotation.services.audit.client_ip.
AXES_CLIENT_IP_CALLABLE = "annotation.services.audit.client_ip"
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "annotation.views.accounts.locked_out"
AXES_VERBOSE = False

# Full health checks (database, broker, workers) for staff or this token, sent as
# `X-Health-Token`; anonymous callers get liveness only.
HEALTH_TOKEN = env_str("HEALTH_TOKEN") or ""
HEALTH_CACHE_SECONDS = env_int("HEALTH_CACHE_SECONDS", 5, minimum=0)

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    # A 403 or 404 is an answer, not a fault: logged in one line, without a traceback.
    "filters": {"client_error": {"()": "config.logfilters.ClientErrorWithoutTraceback"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["client_error"],
        }
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
