"""Celery workers: `celery -A worker worker -Q bulk` for jobs, `-Q interactive` for single reviews."""

from worker import tasks  # registers the tasks with the app
from worker.app import app

__all__ = ["app", "tasks"]
