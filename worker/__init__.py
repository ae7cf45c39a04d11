"""Celery workers: `celery -A worker worker` serves jobs and single reviews (`-Q bulk` or `-Q interactive`
dedicates one to either); `celery -A worker beat` runs the sweep that re-queues stalled jobs."""

from worker import tasks  # registers the tasks with the app
from worker.app import app

__all__ = ["app", "tasks"]
