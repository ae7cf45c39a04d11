# One image for every role of the service (web, workers, migrations); docker-compose.yml picks the command.
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY pyproject.toml alembic.ini ./
COPY api api
COPY worker worker
COPY shared shared
RUN pip install --no-cache-dir -e . && useradd --create-home relevance
USER relevance
