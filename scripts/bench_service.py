"""`make bench-service`: the 25,000-review job end to end through the API, on PostgreSQL and the machine's
Redis, with 2 bulk worker processes, without the deletion test (the goal's job), then again with it; prints
for each its wall time, reviews/s and where the worker time goes (the job's own counters: engine, render,
write, faithfulness), single-review latency (p50/p95) when idle and while each job runs, storage per review,
the one-core engine time of the same reviews in this process, and the ratio of the job's wall time to it
against the goal (at most 2x)."""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import replace
from datetime import datetime
from typing import Any

import redis
import requests
from sqlalchemy import text
from threadpoolctl import threadpool_limits

from scripts.stack import Stack, benchmark_database, child_env, start_service, stop_on_signals
from shared.cli.jobs import Api
from shared.relevance.explainer import load_explainer
from shared.settings import Settings, sqlalchemy_url
from shared.store.datasets import find_split
from shared.store.db import session_factory

PHASES = ("engine", "render", "write", "faithfulness")
GOAL_RATIO = 2.0  # the job through the API against the one-core engine time of the same reviews
SAMPLE_TEXT = "This film was a waste of time, although the actors did their best.<br /><br />Two stars."


def explain_latency(api_url: str) -> float:
    """Seconds for one POST /api/explain."""
    started = time.perf_counter()
    response = requests.post(f"{api_url}/api/explain", json={"text": SAMPLE_TEXT}, timeout=30)
    response.raise_for_status()
    return time.perf_counter() - started


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[18] if len(values) >= 2 else values[0]


def storage(url: str) -> dict[str, Any]:
    """Bytes per stored explanation, whole table with TOAST and indexes, and the review texts."""
    with session_factory(sqlalchemy_url(url))() as session:
        rows = session.scalar(text("SELECT count(*) FROM explanations")) or 1
        figures = session.execute(
            text(
                "SELECT pg_total_relation_size('explanations'), pg_total_relation_size('reviews'),"
                " avg(pg_column_size(heatmap_html)), avg(pg_column_size(lrp) + pg_column_size(sa)"
                " + pg_column_size(gi) + pg_column_size(token_ids) + pg_column_size(spans)),"
                " avg(pg_column_size(tokens)) FROM explanations"
            )
        ).one()
    table, reviews, html, arrays, tokens = figures
    return {
        "rows": rows,
        "explanations_bytes_per_review": table / rows,
        "with_review_text_bytes_per_review": (table + reviews) / rows,
        "heatmap_html_bytes": float(html),
        "arrays_bytes": float(arrays),
        "tokens_bytes": float(tokens),
    }


def engine_only(settings: Settings, limit: int | None) -> dict[str, float]:
    """Tokenising and the engine alone on one core, on the same reviews as the job, in this process."""
    explainer = load_explainer(settings.model_path)
    _, reviews = find_split(settings.imdb_dir, "test")
    texts = [r.text for r in reviews][:limit]
    with threadpool_limits(1):
        started = time.perf_counter()
        read = [explainer.read(t)[0].token_ids for t in texts]
        tokenized = time.perf_counter()
        for start in range(0, len(read), settings.batch_size):
            explainer.engine.explain(read[start : start + settings.batch_size])
        finished = time.perf_counter()
    return {"tokenize_seconds": tokenized - started, "engine_seconds": finished - tokenized}


def run_job(api: Api, api_url: str, limit: int | None, *, faithfulness: bool) -> tuple[dict[str, Any], float]:
    """Submit a job on the test set and sample POST /api/explain while it runs; returns the finished job,
    its wall time (POST -> finished) and the latencies."""
    posted = time.perf_counter()
    body = {"dataset": "imdb-test", "limit": limit, "faithfulness": faithfulness}
    job = api.call("POST", "/api/jobs", json=body).json()
    enqueued = time.perf_counter() - posted
    busy: list[float] = []
    while job["status"] not in ("succeeded", "failed", "cancelled"):
        busy.append(explain_latency(api_url))
        time.sleep(0.25)
        job = api.job(job["id"])
    wall = time.perf_counter() - posted
    return job | {"_wall": wall, "_enqueued": enqueued, "_busy": busy}, wall


def latency_line(label: str, values: list[float]) -> str:
    ms = [1000 * v for v in values]
    return f"{label}: p50 {statistics.median(ms):.0f} ms, p95 {p95(ms):.0f} ms (n={len(ms)})"


def report_job(job: dict[str, Any], workers: int) -> None:
    """The job's outcome, wall time and where its worker time went (its own counters)."""
    wall, seconds = job["_wall"], job["seconds"]
    print(
        f"job {job['id']}: {job['status']}, {job['done']} done, {job['failed']} failed,"
        f" accuracy {job['accuracy']}"
    )
    print(f"wall time POST -> {job['status']}: {wall:.1f} s; {job['done'] / wall:.0f} reviews/s")
    created, started = (datetime.fromisoformat(job[k]) for k in ("created_at", "started_at"))
    first = (started - created).total_seconds()
    print(
        f"POST (create + enqueue): {job['_enqueued']:.2f} s; first batch started {first:.2f} s after creation"
    )
    worker_total = workers * wall
    print(f"worker time ({workers} processes x wall = {worker_total:.1f} s):")
    for part in PHASES:
        print(f"  {part:<12} {seconds[part]:7.1f} s  {100 * seconds[part] / worker_total:5.1f} %")
    rest = worker_total - sum(seconds[part] for part in PHASES)
    share = 100 * rest / worker_total
    print(f"  {'other':<12} {rest:7.1f} s  {share:5.1f} %  (reading reviews, queueing, commits, idle)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--database", default="relevance_bench")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--port", type=int, default=5099)
    parser.add_argument("--limit", type=int, help="only the first N reviews (default: all 25,000)")
    parser.add_argument(
        "--no-faithfulness-job", action="store_true", help="skip the extra job with the deletion test on"
    )
    args = parser.parse_args()

    url = benchmark_database(args.admin_url, args.database, Settings.from_env().imdb_dir)
    redis.Redis.from_url(args.redis_url).flushdb()
    settings = replace(Settings.from_env(), database_url=url, redis_url=args.redis_url)
    api_url = f"http://127.0.0.1:{args.port}"
    # The limiter still counts every write (its Redis round trip is part of the latency), but never refuses.
    env = child_env(
        DATABASE_URL=url,
        REDIS_URL=args.redis_url,
        RELEVANCE_API_URL=api_url,
        RATE_LIMIT_WRITES="100000 per minute",
    )
    stack = Stack(settings.instance_dir / "bench-logs")
    stop_on_signals()
    print(f"load before: {os.getloadavg()[0]:.2f} (1-minute average, {os.cpu_count()} cores)")
    try:
        start_service(stack, env, args.port, args.workers)
        idle = [explain_latency(api_url) for _ in range(60)][10:]  # the first calls warm up connections
        api = Api(replace(settings, api_url=api_url))
        job, wall = run_job(api, api_url, args.limit, faithfulness=False)
        tested = None
        if not args.no_faithfulness_job:
            tested, _ = run_job(api, api_url, args.limit, faithfulness=True)
    finally:
        stack.stop()
    report_job(job, args.workers)
    print(latency_line("POST /api/explain idle", idle))
    print(latency_line("POST /api/explain during the job", job["_busy"]))
    for key, value in storage(url).items():
        print(f"storage {key}: {value:,.0f}")
    alone = engine_only(settings, args.limit)
    one_core = alone["tokenize_seconds"] + alone["engine_seconds"]
    print(
        f"engine alone in this process (1 core, batches of {settings.batch_size}): "
        f"tokenize {alone['tokenize_seconds']:.1f} s + engine {alone['engine_seconds']:.1f} s"
        f" = {one_core:.1f} s"
    )
    ratio = wall / one_core
    verdict = "met" if ratio <= GOAL_RATIO else "missed"
    print(
        f"GOAL job wall / one-core engine: {wall:.1f} / {one_core:.1f} = {ratio:.2f}"
        f" (goal <= {GOAL_RATIO:g}: {verdict})"
    )
    if tested is not None:
        print("the same job with the deletion test on (the job's default sample) and the agreement:")
        report_job(tested, args.workers)
        print(f"  ratio to the one-core engine: {tested['_wall'] / one_core:.2f}")
        print(latency_line("  POST /api/explain during that job", tested["_busy"]))
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
