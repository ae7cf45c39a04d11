"""The web UI: server-rendered pages over the job service's tables (jobs, one job, one review, words).

Safety: Jinja escapes every value, heatmaps are built from escaped tokens only (shared.render.heatmap),
every page is sent with a Content-Security-Policy that allows no inline script or style, forms carry a
CSRF token (Flask-WTF's signed token, checked for every POST of this blueprint), and unknown ids
give a 404 page.
"""

from __future__ import annotations

import functools
import math
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_wtf.csrf import CSRFError, generate_csrf, validate_csrf
from markupsafe import Markup
from sqlalchemy import select
from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.wrappers import Response as Redirect
from wtforms import ValidationError

from api.errors import ApiError, error_response
from api.jobs import db, query_bool, query_int, settings, start_job, the_model
from shared.jobs.browse import (
    SORTS,
    ExplanationFilter,
    WordLookup,
    confusion,
    list_explanations,
    neighbours,
    parse_probability,
    preview_sources,
)
from shared.jobs.lifecycle import JobRequestError, JobSpec, NotFoundError, get_job, progress
from shared.jobs.queue import INTERACTIVE_QUEUE
from shared.jobs.word_stats import WordStats, cache_key, chart_png, job_word_stats
from shared.relevance.methods import BY_KEY, METHODS
from shared.render.colours import shade_stylesheet
from shared.render.heatmap import render_heatmap
from shared.store.db import session_factory
from shared.store.models import FINISHED, Dataset, Explanation, Job, JobStatus, Review

bp = Blueprint("ui", __name__)

PER_PAGE = 50
JOBS_SHOWN = 50
PREVIEW_CHARS = 160  # of the review text shown as a one-line heatmap in the table
WORDS_SHOWN = 20
MIN_COUNTS = (1, 2, 5, 10, 20, 50, 100)  # choices on the words page (each one cached chart per method)
# Carried from page to page: the listing's filters and sort, and the review page's colour scale.
FILTER_PARAMS = (
    "true_class",
    "predicted_class",
    "correct",
    "min_confidence",
    "max_confidence",
    "word",
    "sort",
    "scale",
)
SORT_LABELS = {
    "id": "review id",
    "-confidence": "confidence, highest first",
    "confidence": "confidence, lowest first",
    "-tokens": "length, longest first",
    "tokens": "length, shortest first",
    "-word": "word's LRP, highest first",
    "word": "word's LRP, lowest first",
}
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


def register(app: Flask) -> None:
    """Add the pages to the app: blueprint, session key, security headers and HTML error pages."""
    app.secret_key = settings_secret(app)
    if app.config.get("SESSION_COOKIE_SAMESITE") is None:  # Flask's default sends it cross-site too
        app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    app.jinja_env.globals["csrf_token"] = generate_csrf
    app.register_blueprint(bp)
    app.after_request(_security_headers)
    app.register_error_handler(404, _not_found)


def settings_secret(app: Flask) -> str:
    """SECRET_KEY from the settings, or a random key kept in the instance folder (shared by all processes
    of this machine, so a form served by one gunicorn worker validates in another)."""
    configured: str = app.config["SETTINGS"].secret_key
    if configured:
        return configured
    path = Path(app.instance_path) / "secret_key"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process wrote it first
            return path.read_text().strip()
        with os.fdopen(descriptor, "w") as out:
            out.write(secrets.token_hex(32))
    return path.read_text().strip()


def _security_headers(response: Response) -> Response:
    """Every page (and the API, where the headers do no harm) gets the policy."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def _error_page(status: int, title: str, message: str) -> tuple[str, int]:
    return render_template("error.html", status=status, title=title, message=message), status


def _not_found(exc: NotFound) -> Any:
    """Unknown URLs: JSON under /api (as the API's own errors), a page everywhere else."""
    if request.path.startswith("/api/"):
        return error_response(404, "not_found", exc.description or "not found")
    own_words = exc.description != NotFound.description  # abort(404, "...") in a page says what is missing
    return _error_page(404, "Not found", exc.description if own_words else "There is no such page.")


@bp.errorhandler(NotFoundError)
def _missing(exc: NotFoundError) -> Any:
    return _error_page(404, "Not found", exc.message)


@bp.errorhandler(JobRequestError)
def _refused(exc: JobRequestError) -> Any:
    return _error_page(422, "Cannot do that", exc.message)


@bp.errorhandler(ApiError)
def _api_refused(exc: ApiError) -> Any:
    return _error_page(exc.status, "Cannot do that", exc.message)


@bp.errorhandler(CSRFError)
def _forged(exc: CSRFError) -> Any:
    return _error_page(400, "Form rejected", "The form expired or did not come from this site; reload it.")


@bp.errorhandler(HTTPException)
def _http(exc: HTTPException) -> Any:
    return _error_page(exc.code or 500, exc.name, exc.description or exc.name)


@bp.errorhandler(Exception)
def _broken(exc: Exception) -> Any:
    """A bug, not bad input: logged with its traceback, shown as a page without internals."""
    current_app.logger.exception("unhandled error on %s %s", request.method, request.path, exc_info=exc)
    return _error_page(500, "Server error", "The page failed; the server's log says why.")


@bp.before_request
def _check_csrf() -> None:
    """Every form of these pages posts its CSRF token; without a valid one nothing happens."""
    if request.method == "POST":
        try:
            validate_csrf(request.form.get("csrf_token"))
        except ValidationError as exc:
            raise CSRFError(str(exc)) from exc


@bp.get("/ui/heatmap.css")
def heatmap_css() -> Response:
    """The heatmap colour classes, generated from the same colours as the stored heatmaps."""
    response = Response(shade_stylesheet(), mimetype="text/css")
    response.cache_control.max_age = 3600
    return response


# --- jobs -------------------------------------------------------------------------------------------------


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
    """The form: a dataset, all of it or its first N reviews."""
    limit_text = request.form.get("limit", "").strip()
    if limit_text and not limit_text.isdigit():
        raise JobRequestError("invalid_limit", "the number of reviews must be a positive whole number")
    spec = JobSpec(dataset=request.form.get("dataset") or None, limit=int(limit_text) if limit_text else None)
    job, _ = start_job(spec)
    flash(f"Job {job.id} started: {job.total} reviews.")
    return redirect(url_for("ui.jobs"), 303)


@bp.post("/explain")
def explain_text() -> Redirect:
    """One pasted review, explained on the interactive queue; its page shows it as soon as it is stored."""
    spec = JobSpec(texts=(request.form.get("text", ""),))
    job, (review_id,) = start_job(spec, queue=INTERACTIVE_QUEUE)
    return redirect(url_for("ui.review", job_id=job.id, review_id=review_id), 303)


# --- one job ----------------------------------------------------------------------------------------------


def _float_param(name: str) -> float | None:
    try:
        return parse_probability(name, request.args.get(name))
    except ValueError as exc:
        abort(400, str(exc))


def _listing() -> tuple[ExplanationFilter, str]:
    """The filters and sort of the job page's table, from the query string (also carried to review pages)."""
    sort = request.args.get("sort") or "id"
    if sort not in SORTS:
        abort(400, f"sort must be one of {', '.join(SORTS)}")
    word = request.args.get("word", "").strip() or None
    if sort in ("word", "-word") and word is None:
        abort(400, "sorting by a word's relevance needs a word")
    filters = ExplanationFilter(
        true_class=query_int("true_class"),
        predicted_class=query_int("predicted_class"),
        correct=query_bool("correct"),
        word=word,
        min_confidence=_float_param("min_confidence"),
        max_confidence=_float_param("max_confidence"),
    )
    return filters, sort


def _listing_args() -> dict[str, str]:
    """The non-empty filter parameters of this request, to keep them in links."""
    return {k: v for k in FILTER_PARAMS if (v := request.args.get(k, "").strip())}


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


@bp.get("/jobs/<int:job_id>")
def job(job_id: int) -> str:
    current = get_job(db(), job_id)
    filters, sort = _listing()
    page = query_int("page", 1, 1) or 1
    lookup = _word_lookup(current, filters)
    total, rows = list_explanations(db(), job_id, filters, sort, (page - 1) * PER_PAGE, PER_PAGE, lookup)
    pages = max(1, math.ceil(total / PER_PAGE))
    if page > pages:
        abort(404, f"page {page} is past the last page ({pages})")
    sources = preview_sources(db(), job_id, [r.review_id for r in rows], PREVIEW_CHARS)
    previews = {
        review_id: render_heatmap(s.text, s.spans, s.lrp, scale=s.scale)
        for review_id, s in sources.items()
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
        listing=_listing_args(),
        finished=current.status in FINISHED,
    )


# --- one review -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MethodView:
    """One method's heatmap of the review and the |value| shown at full colour."""

    key: str
    name: str
    html: Markup
    scale: float
    one_sided: bool


def _word_stats(job: Job) -> WordStats | None:
    """The job's word statistics once it has finished (computed on the first call, then cached)."""
    if job.status not in FINISHED:
        return None
    s = settings()
    return job_word_stats(db(), s.instance_dir, s.effective_database_url, job)


def _word_lookup(job: Job, filters: ExplanationFilter) -> WordLookup | None:
    """The finished job's word index when a word is searched (built with its word statistics)."""
    stats = _word_stats(job) if filters.word else None
    return stats.index if stats else None


@bp.get("/jobs/<int:job_id>/reviews/<path:review_id>")
def review(job_id: int, review_id: str) -> Any:
    current = get_job(db(), job_id)
    text = db().scalar(select(Review.text).where(Review.id == review_id))
    row = db().get(Explanation, (job_id, review_id))
    if row is None or text is None:
        if text is not None and current.status in (JobStatus.QUEUED, JobStatus.RUNNING):
            return render_template("pending.html", job=current, review_id=review_id)
        raise NotFoundError("explanation_not_found", f"job {job_id} has no explanation of {review_id!r}")
    filters, sort = _listing()
    before, after = neighbours(db(), job_id, filters, sort, review_id, _word_lookup(current, filters))
    job_scale = request.args.get("scale") == "job"
    stats = _word_stats(current) if job_scale else None
    views = []
    if row.spans is not None:
        spans = [(int(a), int(b)) for a, b in row.spans.reshape(-1, 2)]
        for method in METHODS:
            values = getattr(row, method)
            if values is None:
                continue
            scale = stats.scales[method] if stats else float(abs(values).max(initial=0.0))
            one_sided = not BY_KEY[method].signed
            html = render_heatmap(
                text, spans, values, truncated=bool(row.truncated), scale=scale, signed=not one_sided
            )
            views.append(MethodView(method, BY_KEY[method].label, html, scale, one_sided))
    lrp_words = float(row.lrp.sum()) if row.lrp is not None else None
    return render_template(
        "review.html",
        job=current,
        row=row,
        views=views,
        classes=the_model().class_names,
        lrp_words=lrp_words,
        target_logit=float(row.logits[row.target_class])
        if row.logits is not None and row.target_class is not None
        else None,
        token_count=len(row.tokens.split("\n")) if row.tokens else 0,
        before=before,
        after=after,
        listing=_listing_args(),
        job_scale=job_scale,
        job_scale_available=current.status in FINISHED,
    )


# --- words ------------------------------------------------------------------------------------------------


def _min_count(stats: WordStats) -> int:
    """The chosen minimum number of occurrences, or a default that suits the job's size."""
    default = 20 if stats.review_count >= 1000 else 2
    chosen = query_int("min_count", default)
    if chosen not in MIN_COUNTS:
        abort(400, f"min_count must be one of {', '.join(map(str, MIN_COUNTS))}")
    return chosen


@bp.get("/jobs/<int:job_id>/words")
def words(job_id: int) -> str:
    current = get_job(db(), job_id)
    stats = _word_stats(current)
    if stats is None:
        return render_template("words.html", job=current, stats=None)
    min_count = _min_count(stats)
    rankings = {
        method: (
            stats.ranking(method, min_count, WORDS_SHOWN, highest=True),
            stats.ranking(method, min_count, WORDS_SHOWN, highest=False),
        )
        for method in stats.sums
    }
    return render_template(
        "words.html",
        job=current,
        stats=stats,
        rankings=rankings,
        names={m: BY_KEY[m].label for m in METHODS},
        min_count=min_count,
        min_counts=MIN_COUNTS,
    )


@bp.get("/jobs/<int:job_id>/words/<method>.png")
def word_chart(job_id: int, method: str) -> Response:
    current = get_job(db(), job_id)
    stats = _word_stats(current)
    if stats is None or method not in stats.sums:
        abort(404, f"no {method} word chart for job {job_id}")
    s = settings()
    key = cache_key(s.effective_database_url, current)
    response = Response(
        chart_png(stats, s.instance_dir, key, method, _min_count(stats)), mimetype="image/png"
    )
    response.cache_control.max_age = 3600
    return response


@bp.app_template_filter("listing_url")
def listing_url(args: dict[str, str], **changes: Any) -> str:
    """The query string of the current listing with some parameters changed (None removes one)."""
    merged = {**args, **{k: str(v) for k, v in changes.items() if v is not None}}
    for k in [k for k, v in changes.items() if v is None]:
        merged.pop(k, None)
    return "?" + urlencode(merged) if merged else "?"
