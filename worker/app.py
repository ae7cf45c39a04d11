"""The worker's Celery app: the shared configuration plus a model loaded once per process, before any task."""

from __future__ import annotations

from typing import Any

from celery.signals import worker_process_init
from threadpoolctl import threadpool_limits

from shared.jobs.queue import make_celery
from shared.relevance.explainer import Explainer, load_explainer
from shared.settings import Settings

settings = Settings.from_env()
app = make_celery(settings)


def explainer() -> Explainer:
    """This process's explainer (cached: loaded by the first call)."""
    return load_explainer(settings.model_path)


def _load_model(**_: Any) -> None:
    """Each pool process loads the model as it starts, so the first task does not pay for it. One BLAS thread
    per process: the engine's products are too small to gain from more; scale with processes instead."""
    threadpool_limits(1)
    explainer()


worker_process_init.connect(_load_model)
