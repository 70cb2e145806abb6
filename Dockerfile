# One image for web and workers. GPU workers build with --build-arg ML_EXTRA=gpu.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    COLLABMASK_MODE=production COLLABMASK_VAR_DIR=/var/lib/collabmask
ARG ML_EXTRA=cpu

RUN apt-get update && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --create-home --home-dir /app collabmask
WORKDIR /app

COPY pyproject.toml README.md ./
COPY requirements/ requirements/
COPY collabmask/ collabmask/
COPY config/ config/
COPY annotation/ annotation/
COPY cxrio/ cxrio/
COPY mlworker/ mlworker/
COPY manage.py ./
RUN pip install -c requirements/constraints.txt ".[ml]" \
    && if [ "$ML_EXTRA" = "gpu" ]; then pip install "tensorflow[and-cuda]==2.21.0"; fi
RUN SECRET_KEY=build PATIENT_KEY_SALT=build ALLOWED_HOSTS=build STATIC_COLLECTED=1 python manage.py collectstatic --noinput \
    && mkdir -p /var/lib/collabmask && chown collabmask /var/lib/collabmask

USER collabmask
EXPOSE 8000
CMD ["gunicorn", "config.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "4", "--threads", "4"]
