import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT


def _settings_in_subprocess(env_overrides: dict[str, str], tmp_path) -> subprocess.CompletedProcess:
    env = {
        k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY")
    }
    env.update(
        {"COLLABMASK_VAR_DIR": str(tmp_path / "var"), "DJANGO_SETTINGS_MODULE": "config.settings"}
    )
    env.update(env_overrides)
    code = "import django; django.setup(); from django.conf import settings; print(settings.DATABASES['default']['ENGINE'], settings.DEBUG, settings.CELERY_BROKER_URL)"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )


def test_embedded_defaults_need_no_configuration(tmp_path):
    done = _settings_in_subprocess({}, tmp_path)
    assert done.returncode == 0, done.stderr
    engine, debug, broker = done.stdout.split()
    assert engine == "django.db.backends.sqlite3"
    assert debug == "False"
    assert broker == f"redis+socket://{tmp_path / 'var' / 'redis.sock'}"
    # The generated secret is kept, so sessions survive a restart.
    key_file = tmp_path / "var" / "secret_key"
    assert key_file.exists()
    first = key_file.read_text()
    assert _settings_in_subprocess({}, tmp_path).returncode == 0
    assert key_file.read_text() == first


def test_it_rejects_a_bad_boolean(tmp_path):
    done = _settings_in_subprocess({"DEBUG": "maybe"}, tmp_path)
    assert done.returncode != 0
    assert "DEBUG='maybe' is not a boolean" in done.stderr


def test_it_rejects_an_unsupported_database(tmp_path):
    done = _settings_in_subprocess({"DATABASE_URL": "mysql://u@h/db"}, tmp_path)
    assert done.returncode != 0
    assert "DATABASE_URL must be sqlite:// or postgres://" in done.stderr


def test_it_rejects_a_bad_broker_url(tmp_path):
    done = _settings_in_subprocess({"REDIS_URL": "amqp://guest@localhost//"}, tmp_path)
    assert done.returncode != 0
    assert "REDIS_URL must be redis://" in done.stderr


def test_production_requires_a_secret_key(tmp_path):
    done = _settings_in_subprocess(
        {"COLLABMASK_MODE": "production", "ALLOWED_HOSTS": "example.org"}, tmp_path
    )
    assert done.returncode != 0
    assert "SECRET_KEY (or SECRET_KEY_FILE) is required" in done.stderr
    assert not (tmp_path / "var" / "secret_key").exists()


def test_secrets_can_come_from_files(tmp_path):
    secret = tmp_path / "key.txt"
    secret.write_text("s3cr3t-from-a-file\n")
    code_env = {
        "COLLABMASK_MODE": "production",
        "ALLOWED_HOSTS": "example.org",
        "SECRET_KEY_FILE": str(secret),
        "PATIENT_KEY_SALT": "salt",
        "DATABASE_URL": "sqlite:///" + str(tmp_path / "db.sqlite3"),
        "REDIS_URL": "redis://127.0.0.1:6379/0",
    }
    done = _settings_in_subprocess(code_env, tmp_path)
    assert done.returncode == 0, done.stderr


def test_media_goes_to_s3_compatible_storage_when_configured(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(
        {
            "COLLABMASK_VAR_DIR": str(tmp_path / "var"),
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "MEDIA_S3_BUCKET": "cxr-media",
            "MEDIA_S3_ENDPOINT_URL": "http://minio.internal:9000",
            "MEDIA_S3_ACCESS_KEY_ID": "key",
            "MEDIA_S3_SECRET_ACCESS_KEY": "secret",
        }
    )
    code = (
        'import django; django.setup(); from django.core.files.storage import storages; s = storages["default"]; '
        "print(type(s).__name__, s.bucket_name, s.endpoint_url)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["S3Storage", "cxr-media", "http://minio.internal:9000"]


def test_var_secrets_and_database_are_the_owners_alone(tmp_path):
    var = tmp_path / "var"
    code = (
        "import django; django.setup();"
        "from django.core.management import call_command;"
        "call_command('migrate', verbosity=0)"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update({"COLLABMASK_VAR_DIR": str(var), "DJANGO_SETTINGS_MODULE": "config.settings"})
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert var.stat().st_mode & 0o777 == 0o700
    for name in ("secret_key", "patient_key_salt", "db.sqlite3"):
        assert (var / name).stat().st_mode & 0o777 == 0o600, name


def test_check_deploy_in_production_mode_warns_of_nothing(tmp_path):
    # The environment a deployment has: not the test run's (DJANGO_ALLOW_ASYNC_UNSAFE…).
    keep = ("PATH", "HOME", "LANG", "PYTHONPATH", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "COLLABMASK_MODE": "production",
            "COLLABMASK_VAR_DIR": str(tmp_path / "var"),
            "SECRET_KEY": "k8V2t0pQ-a-long-random-production-secret-5d1Xz7mR4wLc9bN3yH6jF2",
            "PATIENT_KEY_SALT": "salt",
            "ALLOWED_HOSTS": "collabmask.example.org",
            "DATABASE_URL": "sqlite:///" + str(tmp_path / "db.sqlite3"),
            "REDIS_URL": "redis://127.0.0.1:6379/0",
        }
    )
    done = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "System check identified no issues (0 silenced)." in done.stdout


def test_a_web_thread_keeps_its_database_connection_between_requests(tmp_path):
    # Opening a connection (SQLite: the file, its SQL functions, the WAL pragmas) cost more
    # CPU than an image request's queries; the embedded default keeps it as PostgreSQL does.
    code = (
        "import django; django.setup()\n"
        "from django.core.signals import request_finished, request_started\n"
        "from django.db import connection\n"
        "from django.db.backends.signals import connection_created\n"
        "opened = []\n"
        "connection_created.connect(lambda **kw: opened.append(1), weak=False)\n"
        "for _ in range(3):\n"
        "    request_started.send(None)\n"
        "    connection.ensure_connection()\n"
        "    request_finished.send(None)\n"
        "print(connection.vendor, len(opened))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(
        {"COLLABMASK_VAR_DIR": str(tmp_path / "var"), "DJANGO_SETTINGS_MODULE": "config.settings"}
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["sqlite", "1"]
    # DB_CONN_MAX_AGE=0 still opens one per request.
    env["DB_CONN_MAX_AGE"] = "0"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert done.stdout.split() == ["sqlite", "3"], done.stderr


def test_postgresql_prepares_the_statements_a_connection_repeats(tmp_path):
    # The server then only executes them: no parse and plan per request.
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        pytest.skip("needs PostgreSQL: DATABASE_URL=postgres://… (CI sets it)")
    code = (
        "import django; django.setup()\n"
        "from django.db import connection\n"
        "with connection.cursor() as cursor:\n"
        "    for n in range(8):\n"
        "        cursor.execute('SELECT %s::int + 1', [n])\n"
        "    cursor.execute(\"SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE 'SELECT $1::int + 1%%'\")\n"
        "    print(cursor.fetchone()[0])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(
        {"COLLABMASK_VAR_DIR": str(tmp_path / "var"), "DJANGO_SETTINGS_MODULE": "config.settings"}
    )

    def prepared(**overrides) -> str:
        done = subprocess.run(
            [sys.executable, "-c", code],
            cwd=REPO_ROOT,
            env=env | overrides,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert prepared() == "1"
    # Behind a pooler that cannot keep them: off.
    assert prepared(DB_PREPARED_STATEMENTS="0") == "0"
