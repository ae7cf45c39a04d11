"""The jobs page (every job, the forms that start one) and one job's page (summary, confusion matrix, the
deletion test and the methods' agreement with their plots, and its reviews as a filtered, sorted, paged
table), with the buttons that cancel or delete a job."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from flask import Response, abort, flash, redirect, render_template, request, url_for
from sqlalchemy import select
from werkzeug.wrappers import Response as Redirect

from api.context import db, parse, query, settings, start_job, the_model
from api.pages.common import bp, listing_args, word_lookup
from api.schemas import JOB_ID_RULE, ExplainRequest, JobRequest, ListingQuery, PageQuery
from shared.jobs.browse import SORT_LABELS, confusion, list_explanations, preview_sources
from shared.jobs.faithfulness import CHARTS, LABELS, chart_png, job_faithfulness, summary
from shared.jobs.lifecycle import JobSpec, cancel_job, get_job, progress
from shared.jobs.queue import INTERACTIVE_QUEUE
from shared.jobs.removal import delete_job
from shared.jobs.word_stats import cache_key
from shared.render.heatmap import render_heatmap
from shared.store.db import session_factory
from shared.store.models import FINISHED, Dataset, Job

PER_PAGE = 50
JOBS_SHOWN = 50
PREVIEW_CHARS = 160  # of the review text shown as a one-line heatmap in the table


@bp.get("/")
def jobs() -> str:
    session = db()
    rows = list(session.scalars(select(Job).order_by(Job.id.desc()).limit(JOBS_SHOWN)))
    datasets = list(session.scalars(select(Dataset).order_by(Dataset.name)))
    return render_template(
        "jobs.html", jobs=[(job, progress(job)) for job in rows], datasets=datasets, finished=FINISHED
    )


@bp.post("/jobs")
def start_dataset_job() -> Redirect:
    """The form: a dataset, all of it or its first N reviews (checked by the API's own model)."""
    form = {"dataset": request.form.get("dataset") or None, "limit": request.form.get("limit", "").strip()}
    body = parse(JobRequest, {k: v for k, v in form.items() if v})
    job, _ = start_job(JobSpec(dataset=body.dataset, limit=body.limit))
    flash(f"Job {job.id} started: {job.total} reviews.")
    return redirect(url_for("pages.jobs"), 303)


@bp.post("/explain")
def explain_text() -> Redirect:
    """One pasted review, explained on the interactive queue; its page shows it as soon as it is stored."""
    body = parse(ExplainRequest, {"text": request.form.get("text", "")})
    job, (review_id,) = start_job(JobSpec(texts=(body.text,)), queue=INTERACTIVE_QUEUE)
    return redirect(url_for("pages.review", job_id=job.id, review_id=review_id), 303)


@bp.post(f"/jobs/{JOB_ID_RULE}/cancel")
def cancel(job_id: int) -> Redirect:
    cancel_job(db(), job_id)
    flash(f"Job {job_id} cancelled.")
    return redirect(url_for("pages.job", job_id=job_id), 303)


@bp.post(f"/jobs/{JOB_ID_RULE}/delete")
def delete(job_id: int) -> Redirect:
    delete_job(db(), job_id)
    flash(f"Job {job_id} deleted.")
    return redirect(url_for("pages.jobs"), 303)


@dataclass(frozen=True)
class Summary:
    """The job page's head: counts, accuracy, confusion matrix and where the time went."""

    matrix: list[list[int]]  # [true class][predicted class]
    unlabelled: list[int]  # per predicted class, reviews without a label
    failed: int


@functools.lru_cache(maxsize=256)
def _finished_confusion(database_url: str, key: str, job_id: int) -> dict[tuple[int | None, int | None], int]:
    """A finished job's counts (named by its cache key) never change: one query per job and process."""
    with session_factory(database_url)() as session:
        return confusion(session, job_id)


def _summary(job: Job, classes: int) -> Summary:
    matrix = [[0] * classes for _ in range(classes)]
    unlabelled = [0] * classes
    failed = 0
    if job.status in FINISHED:
        url = settings().effective_database_url
        counts = _finished_confusion(url, cache_key(url, job), job.id)
    else:
        counts = confusion(db(), job.id)
    for (true, predicted), count in counts.items():
        if predicted is None:
            failed += count
        elif true is None:
            unlabelled[predicted] += count
        else:
            matrix[true][predicted] += count
    return Summary(matrix, unlabelled, failed)


@bp.get(f"/jobs/{JOB_ID_RULE}")
def job(job_id: int) -> str:
    current = get_job(db(), job_id)
    listing = query(ListingQuery)
    page = query(PageQuery).page
    filters, sort = listing.filter(), listing.sort
    lookup = word_lookup(current, listing)
    total, rows = list_explanations(
        db(), job_id, filters, sort, offset=(page - 1) * PER_PAGE, limit=PER_PAGE, lookup=lookup
    )
    pages = max(1, math.ceil(total / PER_PAGE))
    if page > pages:
        abort(404, f"page {page} is past the last page ({pages})")
    sources = preview_sources(db(), job_id, [r.review_id for r in rows], PREVIEW_CHARS)
    previews = {
        review_id: render_heatmap(s.text, s.spans, s.lrp, scale=s.scale) for review_id, s in sources.items()
    }
    classes = the_model().class_names
    return render_template(
        "job.html",
        job=current,
        progress=progress(current),
        summary=_summary(current, len(classes)),
        classes=classes,
        rows=rows,
        previews=previews,
        total=total,
        page=page,
        pages=pages,
        filters=filters,
        sort=sort,
        sorts=SORT_LABELS,
        listing=listing_args(),
        finished=current.status in FINISHED,
        faithfulness=summary(current, job_faithfulness(db(), settings().effective_database_url, current)),
        labels=LABELS,
    )


@bp.get(f"/jobs/{JOB_ID_RULE}/<any({', '.join(CHARTS)}):kind>.png")
def faithfulness_chart(job_id: int, kind: str) -> Response:
    """The job page's plots: accuracy vs k per ranking, and the agreement's distributions."""
    current = get_job(db(), job_id)
    png = chart_png(db(), settings().effective_database_url, current, kind)
    response = Response(png, mimetype="image/png")
    response.cache_control.max_age = 3600 if current.status in FINISHED else 0
    return response
