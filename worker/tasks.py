"""The tasks: thin wrappers that take ids (or one text) and call the pure functions in `shared/`."""

from __future__ import annotations

from typing import Any, cast

import orjson

from shared.jobs.batches import run_batch
from shared.jobs.export import jsonl_line, review_record
from shared.jobs.lifecycle import check_text_sizes, fail_job, parse_target
from shared.jobs.queue import EXPLAIN_BATCH, EXPLAIN_TEXT
from shared.jobs.word_stats import prepare_when_finished
from shared.render.heatmap import render_heatmap
from shared.store.db import session_factory
from worker.app import app, explainer, settings


def explain_batch(job_id: int, review_ids: list[str]) -> str:
    """One batch of a bulk job; a failure of the whole batch (not of one review) fails the job."""
    sessions = session_factory(settings.effective_database_url)
    try:
        outcome = run_batch(sessions, explainer(), job_id, review_ids)
    except Exception as exc:
        fail_job(sessions, job_id, f"batch of {len(review_ids)} reviews failed: {type(exc).__name__}: {exc}")
        raise
    with sessions() as session:  # the web UI's word statistics, ready before anyone opens the job
        prepare_when_finished(session, settings.instance_dir, settings.effective_database_url, job_id)
    return outcome


def explain_text(text: str, target: str) -> dict[str, Any]:
    """One review now (the interactive queue): the export record plus its LRP heatmap."""
    check_text_sizes([text], settings.max_text_chars)
    (result,) = explainer().explain([text], parse_target(target))
    if isinstance(result, str):
        return {"error": result}
    record = review_record(None, result)
    record["heatmap_html"] = render_heatmap(
        text, result.tokenized.spans, result.explanation.lrp, truncated=result.truncated
    )
    # The result backend speaks JSON: let orjson turn the NumPy arrays into plain lists.
    return cast(dict[str, Any], orjson.loads(jsonl_line(record)))


explain_batch_task = app.task(name=EXPLAIN_BATCH, ignore_result=True)(explain_batch)
explain_text_task = app.task(name=EXPLAIN_TEXT)(explain_text)
