# One image for every role of the service (web, workers, beat, migrations); docker-compose.yml picks the
# command. The locked versions first (a layer that changes only with the lock), then the package itself, which
# carries the model and the migrations. It runs as an unprivileged user in a root-owned /app: the processes
# write nothing there (beat's schedule goes to /var/lib/relevance, a volume in docker-compose.yml).
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY requirements.lock ./
RUN pip install --no-cache-dir -r requirements.lock
COPY pyproject.toml alembic.ini ./
COPY api api
COPY worker worker
COPY shared shared
COPY migrations migrations
RUN pip install --no-cache-dir --no-deps . && rm -rf build ./*.egg-info \
    && useradd --create-home relevance \
    && install -d -o relevance -g relevance /var/lib/relevance
USER relevance
