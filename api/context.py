"""What a request works with, for the JSON API and the pages alike: the settings, the request's database
session, the Celery handle, the model's facts, query parsing with the API's own models, and starting a job."""

from __future__ import annotations

from typing import Any, TypeVar, cast

from celery import Celery
from flask import Flask, current_app, g, request
from kombu.exceptions import OperationalError as BrokerError
from pydantic import BaseModel, ValidationError
from sqlalchemy.orm import Session, sessionmaker

from api.errors import ApiError, invalid
from shared.jobs.lifecycle import JobSpec, ModelInfo, create_job, fail_job, model_info
from shared.jobs.queue import BULK_QUEUE, EXPLAIN_BATCH
from shared.relevance.weights import WeightsError
from shared.settings import Settings
from shared.store.models import Job

M = TypeVar("M", bound=BaseModel)


def settings() -> Settings:
    return cast(Settings, current_app.config["SETTINGS"])


def sessions() -> sessionmaker[Session]:
    return cast(sessionmaker[Session], current_app.extensions["sessions"])


def db() -> Session:
    """The request's session, closed when the request ends."""
    if "session" not in g:
        g.session = sessions()()
    return cast(Session, g.session)


def close_session(_: BaseException | None) -> None:
    session = g.pop("session", None)
    if session is not None:
        session.close()


def celery() -> Celery:
    return cast(Celery, current_app.extensions["celery"])


def the_model() -> ModelInfo:
    try:
        return model_info(settings().model_path)
    except WeightsError as exc:
        current_app.logger.error("the model cannot be read: %s", exc)
        raise ApiError(
            503, "model_unavailable", "the model file cannot be read; see the server's log"
        ) from exc


def parse(model: type[M], data: dict[str, Any]) -> M:
    """Strings (a query string or a form) checked by one of the API's models; 422 if they do not fit."""
    try:
        return model.model_validate(data, strict=False)
    except ValidationError as exc:
        raise invalid(exc) from exc


def query(model: type[M]) -> M:
    return parse(model, request.args.to_dict())


def start_job(spec: JobSpec, queue: str = BULK_QUEUE) -> tuple[Job, list[str]]:
    """Create and commit the job, then queue its batches; returns the job and its review ids."""
    s, session = settings(), db()
    job, batches = create_job(
        session,
        spec,
        the_model(),
        batch_size=s.batch_size,
        max_texts=s.max_texts,
        max_text_chars=s.max_text_chars,
    )
    session.commit()
    try:
        for batch in batches:
            celery().send_task(EXPLAIN_BATCH, args=[job.id, batch], queue=queue, ignore_result=True)
    except BrokerError as exc:
        current_app.logger.error("could not queue job %s: %s", job.id, exc)  # the host names stay in the log
        fail_job(sessions(), job.id, "could not queue the job: the task queue cannot be reached")
        raise ApiError(503, "queue_unavailable", "the task queue cannot be reached") from exc
    return job, [review_id for batch in batches for review_id in batch]


def register(app: Flask) -> None:
    app.teardown_appcontext(close_session)
