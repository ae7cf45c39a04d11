"""The JSON API (documented in api/openapi.json): jobs, their explanations and exports, single reviews."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

from celery import Celery
from celery.exceptions import TimeoutError as CeleryTimeout
from flask import Blueprint, Response, current_app, g, request, stream_with_context, url_for
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from api.errors import ApiError
from shared.jobs.browse import ExplanationFilter, list_explanations, parse_probability
from shared.jobs.export import csv_lines, jsonl_line, jsonl_lines, row_record
from shared.jobs.lifecycle import (
    PREDICTED,
    JobSpec,
    ModelInfo,
    NotFoundError,
    cancel_job,
    check_target,
    check_text_sizes,
    create_job,
    fail_job,
    get_job,
    model_info,
    progress,
)
from shared.jobs.queue import BULK_QUEUE, EXPLAIN_BATCH, EXPLAIN_TEXT, INTERACTIVE_QUEUE
from shared.relevance.methods import METHODS
from shared.relevance.weights import WeightsError
from shared.settings import Settings
from shared.store.models import Dataset, Explanation, Job, Review

bp = Blueprint("api", __name__, url_prefix="/api")
OPENAPI = Path(__file__).with_name("openapi.json")
MAX_PER_PAGE = 200
EXPORT_ROWS_PER_FETCH = 200


def settings() -> Settings:
    return cast(Settings, current_app.config["SETTINGS"])


def sessions() -> sessionmaker[Session]:
    return cast(sessionmaker[Session], current_app.extensions["sessions"])


def db() -> Session:
    """The request's session, closed when the request ends."""
    if "session" not in g:
        g.session = sessions()()
    return cast(Session, g.session)


def celery() -> Celery:
    return cast(Celery, current_app.extensions["celery"])


def the_model() -> ModelInfo:
    try:
        return model_info(settings().model_path)
    except WeightsError as exc:
        raise ApiError(503, "model_unavailable", str(exc)) from exc


def json_body() -> dict[str, Any]:
    """The request's JSON object, or a 400."""
    body = request.get_json(silent=True)
    if body is None:
        raise ApiError(400, "invalid_json", "the body must be JSON (Content-Type: application/json)")
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "the body must be a JSON object")
    return body


def field(body: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
    """An optional field of the given JSON type (booleans are not integers here)."""
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise ApiError(400, "invalid_field", f'"{name}" has the wrong type')
    return value


def string_list(body: dict[str, Any], name: str) -> tuple[str, ...] | None:
    value = field(body, name, list)
    if value is None:
        return None
    if not all(isinstance(v, str) for v in value):
        raise ApiError(400, "invalid_field", f'"{name}" must be a list of strings')
    return tuple(value)


def target_field(body: dict[str, Any]) -> str:
    """ "predicted" (the default) or a class index, given as a number or a string."""
    value = field(body, "target", (str, int), PREDICTED)
    return str(value)


def query_int(
    name: str, default: int | None = None, low: int | None = None, high: int | None = None
) -> int | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ApiError(400, "invalid_parameter", f"{name} must be an integer") from exc
    if (low is not None and value < low) or (high is not None and value > high):
        raise ApiError(400, "invalid_parameter", f"{name} must be between {low} and {high}")
    return value


def query_probability(name: str) -> float | None:
    try:
        return parse_probability(name, request.args.get(name))
    except ValueError as exc:
        raise ApiError(400, "invalid_parameter", str(exc)) from exc


def query_bool(name: str) -> bool | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    if raw.lower() not in ("true", "false", "1", "0"):
        raise ApiError(400, "invalid_parameter", f"{name} must be true or false")
    return raw.lower() in ("true", "1")


def job_json(job: Job) -> dict[str, Any]:
    p = progress(job)
    return {
        "id": job.id,
        "kind": job.kind,
        "dataset": job.dataset,
        "limit": job.review_limit,
        "target": job.target,
        "methods": job.method_list,
        "status": job.status,
        "total": job.total,
        "done": job.done,
        "failed": job.failed,
        "percent": round(p.percent, 2),
        "reviews_per_second": p.reviews_per_second,
        "eta_seconds": p.eta_seconds,
        "elapsed_seconds": p.elapsed_seconds,
        "accuracy": p.accuracy,
        "error": job.error,
        "model_checksum": job.model_checksum,
        "created_at": job.created_at.isoformat(),
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "seconds": {
            "engine": job.engine_seconds,
            "render": job.render_seconds,
            "write": job.write_seconds,
        },
        "url": url_for("api.show_job", job_id=job.id),
    }


@bp.get("/openapi.json")
def openapi() -> Response:
    return Response(OPENAPI.read_bytes(), mimetype="application/json")


@bp.get("/datasets")
def datasets() -> Any:
    rows = db().scalars(select(Dataset).order_by(Dataset.name))
    return {"datasets": [{"name": d.name, "split": d.split, "reviews": d.review_count} for d in rows]}


def start_job(spec: JobSpec, queue: str = BULK_QUEUE) -> tuple[Job, list[str]]:
    """Create and commit the job, then queue its batches (also used by the web pages' forms); returns the job
    and its review ids."""
    s, session = settings(), db()
    job, batches = create_job(session, spec, the_model(), s.batch_size, s.max_texts, s.max_text_chars)
    session.commit()
    try:
        for batch in batches:
            celery().send_task(EXPLAIN_BATCH, args=[job.id, batch], queue=queue)
    except BrokerError as exc:
        fail_job(sessions(), job.id, f"could not queue the job: {exc}")
        raise ApiError(503, "queue_unavailable", "the task queue (Redis) cannot be reached") from exc
    return job, [review_id for batch in batches for review_id in batch]


@bp.post("/jobs")
def submit_job() -> Any:
    body = json_body()
    limit = field(body, "limit", int)
    spec = JobSpec(
        dataset=field(body, "dataset", str),
        texts=string_list(body, "texts"),
        limit=limit,
        methods=string_list(body, "methods") or METHODS,
        target=target_field(body),
    )
    job, _ = start_job(spec)
    response = current_app.json.response(job_json(job))
    response.status_code = 202
    response.headers["Location"] = url_for("api.show_job", job_id=job.id)
    return response


@bp.get("/jobs")
def list_jobs() -> Any:
    limit = query_int("limit", 50, 1, 1000)
    jobs = db().scalars(select(Job).order_by(Job.id.desc()).limit(limit))
    return {"jobs": [job_json(j) for j in jobs]}


@bp.get("/jobs/<int:job_id>")
def show_job(job_id: int) -> Any:
    return job_json(get_job(db(), job_id))


@bp.post("/jobs/<int:job_id>/cancel")
def cancel(job_id: int) -> Any:
    return job_json(cancel_job(db(), job_id))


@bp.get("/jobs/<int:job_id>/explanations")
def explanations(job_id: int) -> Any:
    get_job(db(), job_id)
    page = query_int("page", 1, 1) or 1
    per_page = query_int("per_page", 50, 1, MAX_PER_PAGE) or 50
    filters = ExplanationFilter(
        true_class=query_int("true_class"),
        predicted_class=query_int("predicted_class"),
        correct=query_bool("correct"),
        word=request.args.get("word") or None,
        min_confidence=query_probability("min_confidence"),
        max_confidence=query_probability("max_confidence"),
    )
    sort = request.args.get("sort", "id")
    total, rows = list_explanations(db(), job_id, filters, sort, (page - 1) * per_page, per_page)
    return {
        "total": total,
        "page": page,
        "per_page": per_page,
        "items": [
            {
                "review_id": r.review_id,
                "true_class": r.true_class,
                "predicted_class": r.predicted_class,
                "confidence": r.confidence,
                "truncated": r.truncated,
                "error": r.error,
                "word_relevance": r.word_relevance,
                "url": url_for("api.explanation", job_id=job_id, review_id=r.review_id),
            }
            for r in rows
        ],
    }


@bp.get("/jobs/<int:job_id>/explanations/<path:review_id>")
def explanation(job_id: int, review_id: str) -> Any:
    row = db().get(Explanation, (job_id, review_id))
    if row is None:
        raise NotFoundError("explanation_not_found", f"job {job_id} has no explanation of {review_id!r}")
    review = db().get_one(Review, review_id)
    record = row_record(row)
    record.update(true_class=row.true_class, error=row.error, text=review.text, heatmap_html=row.heatmap_html)
    return Response(jsonl_line(record), mimetype="application/json")


@bp.get("/jobs/<int:job_id>/export")
def export(job_id: int) -> Response:
    get_job(db(), job_id)
    kind = request.args.get("format", "jsonl")
    if kind not in ("jsonl", "csv"):
        raise ApiError(400, "invalid_parameter", "format must be jsonl or csv")
    factory = sessions()

    def rows() -> Iterator[Explanation]:
        with factory() as session:
            query = (
                select(Explanation)
                .where(Explanation.job_id == job_id)
                .order_by(Explanation.review_id)
                .execution_options(yield_per=EXPORT_ROWS_PER_FETCH)
            )
            yield from session.scalars(query)

    body = jsonl_lines(rows()) if kind == "jsonl" else csv_lines(rows())
    mimetype = "application/x-ndjson" if kind == "jsonl" else "text/csv"
    response = Response(stream_with_context(body), mimetype=mimetype)
    response.headers["Content-Disposition"] = f"attachment; filename=job-{job_id}.{kind}"
    return response


@bp.post("/explain")
def explain_now() -> Any:
    body = json_body()
    text = body.get("text")
    if not isinstance(text, str):
        raise ApiError(400, "invalid_field", '"text" must be a string')
    target = target_field(body)
    check_text_sizes([text], settings().max_text_chars)
    check_target(target, the_model())
    try:
        pending = celery().send_task(EXPLAIN_TEXT, args=[text, target], queue=INTERACTIVE_QUEUE)
        result = pending.get(timeout=settings().explain_timeout)
    except BrokerError as exc:
        raise ApiError(503, "queue_unavailable", "the task queue (Redis) cannot be reached") from exc
    except CeleryTimeout as exc:
        raise ApiError(
            504, "timeout", "no worker answered in time; is an interactive worker running?"
        ) from exc
    pending.forget()
    if "error" in result:
        raise ApiError(422, "explain_failed", str(result["error"]))
    return Response(jsonl_line(result), mimetype="application/json")
