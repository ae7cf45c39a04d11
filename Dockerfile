# One image for every role of the service (web, workers, migrations); docker-compose.yml picks the command.
# The locked versions first (a layer that changes only with the lock), then the package itself, which carries
# the model and the migrations.
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
RUN pip install --no-cache-dir --no-deps . && useradd --create-home relevance
USER relevance
