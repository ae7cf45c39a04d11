"""The JSON API: jobs, their explanations and exports, single reviews. Its spec, /api/openapi.json, is
generated from these routes and the models of api/schemas.py, which also validate every request."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from celery.exceptions import TimeoutError as CeleryTimeout
from flask import Response, current_app, request, stream_with_context, url_for
from flask_openapi3.blueprint import APIBlueprint
from flask_openapi3.models.tag import Tag
from flask_openapi3.types import ResponseDict
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy import select
from werkzeug.exceptions import BadRequest

from api.context import celery, db, sessions, settings, start_job, the_model
from api.errors import ApiError
from api.schemas import (
    MAX_REQUEST_BYTES,
    DatasetList,
    ErrorBody,
    ExplainRequest,
    ExplainResult,
    ExplanationDetail,
    ExplanationPage,
    ExplanationPath,
    ExplanationsQuery,
    ExportQuery,
    FaithfulnessOut,
    JobList,
    JobOut,
    JobPath,
    JobRequest,
    JobsQuery,
    WordsOut,
    WordsQuery,
)
from api.security import READ, WRITE
from shared.jobs.browse import list_explanations
from shared.jobs.export import csv_lines, jsonl_line, jsonl_lines, row_record
from shared.jobs.faithfulness import job_faithfulness, review_agreement, summary
from shared.jobs.lifecycle import (
    ConflictError,
    JobSpec,
    NotFoundError,
    cancel_job,
    check_target,
    check_text_sizes,
    get_job,
    progress,
)
from shared.jobs.queue import EXPLAIN_TEXT, INTERACTIVE_QUEUE
from shared.jobs.removal import delete_job
from shared.jobs.word_stats import default_min_reviews, job_word_stats, orientation
from shared.store.models import FINISHED, Dataset, Explanation, Job, Review

EXPORT_ROWS_PER_FETCH = 200
JSON_BODIES = ("POST", "PUT", "PATCH", "DELETE")


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    content = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    return {"description": description, "content": content} | ({"headers": headers} if headers else {})


RETRY_AFTER = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}
CHALLENGE = {"WWW-Authenticate": {"description": 'Bearer realm="api"', "schema": {"type": "string"}}}
READ_ERRORS: ResponseDict = {
    400: ErrorBody,
    401: _error("no token or a wrong one (only when API_READ_TOKEN is set)", CHALLENGE),
    404: ErrorBody,
    422: ErrorBody,
}
WRITE_ERRORS: ResponseDict = READ_ERRORS | {
    401: _error("no token or a wrong one (only when API_TOKEN is set)", CHALLENGE),
    413: _error(f"the body is larger than {MAX_REQUEST_BYTES} bytes"),
    415: _error("the body is not sent as Content-Type: application/json"),
    429: _error("too many writes from this address; try again after Retry-After seconds", RETRY_AFTER),
}

bp = APIBlueprint(
    "api",
    __name__,
    url_prefix="/api",
    abp_tags=[Tag(name="jobs", description="explanation jobs")],
    abp_responses=READ_ERRORS,
)


@bp.before_request
def _json_bodies_only() -> None:
    """Writes take JSON only: a cross-site HTML form cannot send it. The body is parsed here, strictly."""
    if request.method not in JSON_BODIES:
        return
    if request.mimetype != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the request as Content-Type: application/json")
    if request.get_data(cache=True):
        try:
            request.get_json()
        except BadRequest as exc:
            raise ApiError(400, "invalid_json", "the body is not valid JSON") from exc


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
            "faithfulness": job.faithfulness_seconds,
        },
        "url": url_for("api.show_job", job_id=job.id),
    }


@bp.get("/datasets", responses={200: DatasetList}, security=READ)
def datasets() -> Any:
    """The imported datasets."""
    rows = db().scalars(select(Dataset).order_by(Dataset.name))
    return {"datasets": [{"name": d.name, "split": d.split, "reviews": d.review_count} for d in rows]}


@bp.post("/jobs", responses={202: JobOut, **WRITE_ERRORS, 503: ErrorBody}, security=WRITE)
def submit_job(body: JobRequest) -> Any:
    """Start a job on a dataset or on the given texts; 202 with the job and its `Location`."""
    spec = JobSpec(
        dataset=body.dataset,
        texts=tuple(body.texts) if body.texts is not None else None,
        limit=body.limit,
        methods=tuple(body.methods),
        target=str(body.target),
        faithfulness=body.faithfulness,
        faithfulness_every=body.faithfulness_every,
    )
    job, _ = start_job(spec)
    response = current_app.json.response(job_json(job))
    response.status_code = 202
    response.headers["Location"] = url_for("api.show_job", job_id=job.id)
    return response


@bp.get("/jobs", responses={200: JobList}, security=READ)
def list_jobs(query: JobsQuery) -> Any:
    """The newest jobs first."""
    jobs = db().scalars(select(Job).order_by(Job.id.desc()).limit(query.limit))
    return {"jobs": [job_json(j) for j in jobs]}


@bp.get("/jobs/<int:job_id>", responses={200: JobOut}, security=READ)
def show_job(path: JobPath) -> Any:
    """A job's status, counts, percent, rate, ETA, accuracy so far and worker time by phase."""
    return job_json(get_job(db(), path.job_id))


@bp.post("/jobs/<int:job_id>/cancel", responses={200: JobOut, **WRITE_ERRORS, 409: ErrorBody}, security=WRITE)
def cancel(path: JobPath) -> Any:
    """Stop a queued or running job; the rows already stored stay."""
    return job_json(cancel_job(db(), path.job_id))


@bp.delete("/jobs/<int:job_id>", responses={204: None, **WRITE_ERRORS}, security=WRITE)
def delete(path: JobPath) -> Any:
    """Remove a job with its explanations and submitted texts (a running job is cancelled first)."""
    delete_job(db(), path.job_id)
    return Response(status=204)


@bp.get("/jobs/<int:job_id>/explanations", responses={200: ExplanationPage}, security=READ)
def explanations(path: JobPath, query: ExplanationsQuery) -> Any:
    """A page of the job's explanations, filtered and sorted."""
    job_id = path.job_id
    get_job(db(), job_id)
    offset = (query.page - 1) * query.per_page
    total, rows = list_explanations(
        db(), job_id, query.filter(), query.sort, offset=offset, limit=query.per_page
    )
    return {
        "total": total,
        "page": query.page,
        "per_page": query.per_page,
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


@bp.get("/jobs/<int:job_id>/explanations/<path:review_id>", responses={200: ExplanationDetail}, security=READ)
def explanation(path: ExplanationPath) -> Any:
    """One explained review: the export record, its text and its LRP heatmap."""
    row = db().get(Explanation, (path.job_id, path.review_id))
    if row is None:
        raise NotFoundError("explanation_not_found", f"job {path.job_id} has no explanation of that review")
    review = db().get_one(Review, path.review_id)
    record = row_record(row)
    record.update(true_class=row.true_class, error=row.error, text=review.text, heatmap_html=row.heatmap_html)
    record["agreement"] = review_agreement(row)
    return Response(jsonl_line(record), mimetype="application/json")


@bp.get("/jobs/<int:job_id>/words", responses={200: WordsOut, 409: ErrorBody}, security=READ)
def words(path: JobPath, query: WordsQuery) -> Any:
    """A finished job's words, oriented to fixed classes: per method and class, the words with the highest
    mean relevance toward the class (signed methods) or when it is predicted (unsigned); 409 until the job
    has finished."""
    job = get_job(db(), path.job_id)
    if job.status not in FINISHED:
        raise ConflictError(
            "job_not_finished", f"job {job.id} is {job.status}: its words come when it finishes"
        )
    stats = job_word_stats(db(), settings().effective_database_url, job)
    classes = the_model().class_names
    min_reviews = query.min_reviews or default_min_reviews(stats.review_count)
    views = [
        {
            "method": view.method,
            "direction": "toward" if view.signed else "predicted",
            "class_index": view.class_index,
            "class_name": classes[view.class_index],
            "title": view.title(classes),
            "reviews": stats.view_reviews(view),
            "words": [
                {
                    "word": w.word,
                    "mean": w.mean,
                    "occurrences": w.occurrences,
                    "reviews": w.reviews,
                    "weak": w.weak,
                }
                for w in stats.ranking(view, min_reviews, query.limit)
            ],
        }
        for view in stats.views()
    ]
    return {
        "job_id": job.id,
        "review_count": stats.review_count,
        "min_reviews": min_reviews,
        "orientation": orientation(classes),
        "views": views,
    }


@bp.get("/jobs/<int:job_id>/faithfulness", responses={200: FaithfulnessOut}, security=READ)
def faithfulness(path: JobPath) -> Any:
    """The deletion test over the job's tested reviews so far: accuracy vs k for the correctly classified
    and the misclassified reviews, flip rates, AOPC comprehensiveness and sufficiency with 95 % intervals;
    the methods' agreement (Spearman, top-5 overlap); the test's cost against the explanation's."""
    job = get_job(db(), path.job_id)
    return summary(job, job_faithfulness(db(), settings().effective_database_url, job))


EXPORTED = {
    "description": "one JSON line per review, or CSV with a header (streamed)",
    "content": {
        "application/x-ndjson": {"schema": {"type": "string"}},
        "text/csv": {"schema": {"type": "string"}},
    },
}


@bp.get("/jobs/<int:job_id>/export", responses={200: EXPORTED}, security=READ)
def export(path: JobPath, query: ExportQuery) -> Response:
    """Every explanation of the job, in the `relevance explain --output` format or as CSV."""
    job_id, kind = path.job_id, query.format
    get_job(db(), job_id)
    factory = sessions()

    def rows() -> Iterator[Explanation]:
        with factory() as session:
            ordered = (
                select(Explanation)
                .where(Explanation.job_id == job_id)
                .order_by(Explanation.review_id)
                .execution_options(yield_per=EXPORT_ROWS_PER_FETCH)
            )
            yield from session.scalars(ordered)

    body = jsonl_lines(rows()) if kind == "jsonl" else csv_lines(rows())
    mimetype = "application/x-ndjson" if kind == "jsonl" else "text/csv"
    response = Response(stream_with_context(body), mimetype=mimetype)
    response.headers["Content-Disposition"] = f"attachment; filename=job-{job_id}.{kind}"
    return response


@bp.post(
    "/explain",
    responses={200: ExplainResult, **WRITE_ERRORS, 503: ErrorBody, 504: ErrorBody},
    security=WRITE,
)
def explain_now(body: ExplainRequest) -> Any:
    """One review explained now by an interactive worker (waits up to EXPLAIN_TIMEOUT seconds)."""
    target = str(body.target)
    check_text_sizes([body.text], settings().max_text_chars)
    check_target(target, the_model())
    try:
        pending = celery().send_task(EXPLAIN_TEXT, args=[body.text, target], queue=INTERACTIVE_QUEUE)
        result = pending.get(timeout=settings().explain_timeout)
    except BrokerError as exc:
        current_app.logger.error("could not queue a single review: %s", exc)
        raise ApiError(503, "queue_unavailable", "the task queue cannot be reached") from exc
    except CeleryTimeout as exc:
        pending.forget()  # nobody will collect its result
        raise ApiError(
            504, "timeout", "no worker answered in time; is an interactive worker running?"
        ) from exc
    pending.forget()
    if "error" in result:
        raise ApiError(422, "explain_failed", str(result["error"]))
    return Response(jsonl_line(result), mimetype="application/json")
