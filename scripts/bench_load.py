"""`make bench-load`: reads under load while the 25,000-review job runs, through gunicorn on loopback.

The service as `make bench-service` starts it (gunicorn with 2 processes x 4 threads, a bulk worker with 2
processes, the interactive worker), on a PostgreSQL database of its own and the machine's Redis under a key
prefix of its own. First the job alone (its unloaded wall time, created -> finished by the job's own clock);
then the same job again while CLIENTS threads read for SECONDS (or until each has made MAX_PER_CLIENT
requests), back to back, each its own keep-alive connection to 127.0.0.1:
  status               GET /api/jobs/<running job>
  explanations         GET /api/jobs/<finished job>/explanations?page=N&per_page=50 (N at random)
  job page (running)   GET /jobs/<running job>
  job page (finished)  GET /jobs/<finished job>?page=N (its charts' section, 50 rows with previews)
  review page          GET /jobs/<finished job>/reviews/<id> (a review at random)
An error is an exception or any status but 200. Prints requests/s, errors and p50/p95/p99 per kind and
overall, the job's loaded and unloaded wall times, and each goal as met or missed."""

from __future__ import annotations

import argparse
import os
import random
import statistics
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import psycopg
import redis
import requests

from api.pages.jobs import PER_PAGE as JOB_PAGE_ROWS
from scripts.stack import Stack, benchmark_database, child_env, start_service, stop_on_signals
from shared.settings import Settings

KINDS = ("status", "explanations", "job page (running)", "job page (finished)", "review page")
GOAL_ERRORS = 0
GOAL_P95_MS = 250.0
GOAL_SLOWDOWN = 0.20  # the loaded job's wall time within 20 % of the unloaded one
PER_PAGE = 50  # asked of the API (its default)
POLL_SECONDS = 0.5


def job_wall(job: dict[str, Any]) -> float:
    """Seconds from the job's creation to its end, by the job's own timestamps (no polling error)."""
    created, finished = (datetime.fromisoformat(job[key]) for key in ("created_at", "finished_at"))
    return (finished - created).total_seconds()


def run_job(base: str, limit: int | None, stack: Stack) -> dict[str, Any]:
    """POST the job, then poll its status until it ends; returns the finished job."""
    created = requests.post(f"{base}/api/jobs", json={"dataset": "imdb-test", "limit": limit}, timeout=30)
    created.raise_for_status()
    job: dict[str, Any] = created.json()
    return wait_for_job(base, job["id"], stack)


def wait_for_job(base: str, job_id: int, stack: Stack) -> dict[str, Any]:
    """Poll the job's status every POLL_SECONDS (a light load of its own, outside the figures)."""
    end = time.monotonic() + 1800.0
    while time.monotonic() < end:
        stack.check()
        job: dict[str, Any] = requests.get(f"{base}/api/jobs/{job_id}", timeout=30).json()
        if job["status"] not in ("queued", "running"):
            return job
        time.sleep(POLL_SECONDS)
    raise RuntimeError(f"job {job_id} did not finish in 30 minutes")


def wait_for_word_stats(url: str, job_id: int, stack: Stack) -> None:
    """Until the worker has stored the finished job's word statistics (its last task): workers idle."""

    def stored() -> bool:
        with psycopg.connect(url) as connection:
            row = connection.execute("SELECT 1 FROM job_word_stats WHERE job_id = %s", [job_id]).fetchone()
        return row is not None

    stack.wait_for(stored, f"job {job_id}'s word statistics", deadline=300.0)


@dataclass
class Sample:
    kind: str
    seconds: float
    ok: bool


@dataclass
class Load:
    """What the clients measured, and the first few errors."""

    samples: list[Sample] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    started: float = 0.0
    ended: float = 0.0


def client(
    number: int,
    base: str,
    running: int,
    finished: int,
    review_ids: list[str],
    deadline: float,
    max_requests: int,
    load: Load,
) -> None:
    """One reader: the kinds in turn (each client starting at another), back to back until the deadline."""
    rng = random.Random(number)
    explanation_pages = max(1, -(-len(review_ids) // PER_PAGE))
    job_pages = max(1, -(-len(review_ids) // JOB_PAGE_ROWS))
    samples: list[Sample] = []
    errors: list[str] = []
    with requests.Session() as session:
        for count in range(max_requests):
            if time.monotonic() >= deadline:
                break
            kind = KINDS[(number + count) % len(KINDS)]
            if kind == "status":
                path = f"/api/jobs/{running}"
            elif kind == "explanations":
                page = rng.randint(1, explanation_pages)
                path = f"/api/jobs/{finished}/explanations?page={page}&per_page={PER_PAGE}"
            elif kind == "job page (running)":
                path = f"/jobs/{running}"
            elif kind == "job page (finished)":
                path = f"/jobs/{finished}?page={rng.randint(1, job_pages)}"
            else:
                path = f"/jobs/{finished}/reviews/{rng.choice(review_ids)}"
            started = time.perf_counter()
            try:
                response = session.get(base + path, timeout=30)
                response.content  # noqa: B018  (the whole body, as a browser reads it)
                ok = response.status_code == 200
                problem = "" if ok else f"{response.status_code} {path}"
            except requests.RequestException as exc:
                ok, problem = False, f"{type(exc).__name__} {path}: {exc}"
            samples.append(Sample(kind, time.perf_counter() - started, ok))
            if problem and len(errors) < 5:
                errors.append(problem)
    with load.lock:
        load.samples += samples
        load.errors += errors[: max(0, 10 - len(load.errors))]


def read_under_load(
    base: str,
    running: int,
    finished: int,
    review_ids: list[str],
    clients: int,
    seconds: float,
    max_per_client: int,
) -> Load:
    load = Load(started=time.monotonic())
    deadline = load.started + seconds
    threads = [
        threading.Thread(
            target=client,
            args=(n, base, running, finished, review_ids, deadline, max_per_client, load),
            daemon=True,
        )
        for n in range(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    load.ended = time.monotonic()
    return load


def percentiles(values: list[float]) -> tuple[float, float, float]:
    """p50, p95 and p99 in milliseconds."""
    ms = sorted(1000 * v for v in values)
    if len(ms) < 2:
        return (ms[0],) * 3 if ms else (float("nan"),) * 3
    cuts = statistics.quantiles(ms, n=100, method="inclusive")
    return cuts[49], cuts[94], cuts[98]


def report_load(load: Load) -> tuple[int, float]:
    """Print the per-kind and overall table; returns (errors, overall p95 in ms)."""
    duration = load.ended - load.started
    by_kind: dict[str, list[Sample]] = defaultdict(list)
    for sample in load.samples:
        by_kind[sample.kind].append(sample)
    print(
        f"{'kind':<20} {'requests':>8} {'req/s':>7} {'errors':>6} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7}"
    )
    rows = [(kind, by_kind[kind]) for kind in KINDS] + [("overall", load.samples)]
    for kind, samples in rows:
        p50, p95, p99 = percentiles([s.seconds for s in samples])
        errors = sum(not s.ok for s in samples)
        print(
            f"{kind:<20} {len(samples):>8} {len(samples) / duration:>7.1f} {errors:>6}"
            f" {p50:>7.0f} {p95:>7.0f} {p99:>7.0f}"
        )
    for problem in load.errors:
        print(f"  error: {problem}")
    return sum(not s.ok for s in load.samples), percentiles([s.seconds for s in load.samples])[1]


def verdict(met: bool) -> str:
    return "met" if met else "missed"


def load_line(when: str) -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {when}: {one:.2f} {five:.2f} {fifteen:.2f} (1/5/15-minute averages, {os.cpu_count()} cores)"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--database", default="relevance_bench_load")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--workers", type=int, default=2, help="bulk worker processes")
    parser.add_argument("--port", type=int, default=5098)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the clients read")
    parser.add_argument("--max-per-client", type=int, default=20_000, help="requests per client at most")
    parser.add_argument("--limit", type=int, help="only the first N reviews (default: all 25,000)")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()

    url = benchmark_database(args.admin_url, args.database, Settings.from_env().imdb_dir)
    prefix = f"bench-load-{uuid.uuid4().hex[:8]}:"
    settings = replace(Settings.from_env(), database_url=url, redis_url=args.redis_url, redis_prefix=prefix)
    base = f"http://127.0.0.1:{args.port}"
    env = child_env(
        DATABASE_URL=url,
        REDIS_URL=args.redis_url,
        REDIS_PREFIX=prefix,
        RELEVANCE_API_URL=base,
        RATE_LIMIT_WRITES="100000 per minute",
    )
    stack = Stack(settings.instance_dir / "bench-load-logs")
    stop_on_signals()
    print(load_line("before"))
    try:
        start_service(stack, env, args.port, args.workers)
        unloaded = run_job(base, args.limit, stack)
        wait_for_word_stats(url, unloaded["id"], stack)
        with psycopg.connect(url) as connection:
            review_ids = [
                row[0]
                for row in connection.execute(
                    "SELECT review_id FROM explanations WHERE job_id = %s ORDER BY review_id",
                    [unloaded["id"]],
                )
            ]
        print(load_line("between the jobs"))
        created = requests.post(
            f"{base}/api/jobs", json={"dataset": "imdb-test", "limit": args.limit}, timeout=30
        )
        created.raise_for_status()
        loaded_id = created.json()["id"]
        load = read_under_load(
            base, loaded_id, unloaded["id"], review_ids, args.clients, args.seconds, args.max_per_client
        )
        loaded = wait_for_job(base, loaded_id, stack)
        print(load_line("after"))
    finally:
        stack.stop()
        client_ = redis.Redis.from_url(args.redis_url)
        keys = list(client_.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client_.delete(*keys)
        if not args.keep:
            with psycopg.connect(args.admin_url, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')

    print(
        f"{args.clients} clients for {load.ended - load.started:.1f} s on 127.0.0.1 (gunicorn 2 x 4 threads),"
        f" {args.workers} bulk worker processes"
    )
    errors, p95 = report_load(load)
    before, after = job_wall(unloaded), job_wall(loaded)
    slowdown = after / before - 1
    for name, job in (("unloaded", unloaded), ("loaded", loaded)):
        print(
            f"job {job['id']} ({name}): {job['status']}, {job['done']} done, {job['failed']} failed,"
            f" wall {job_wall(job):.1f} s (created -> finished)"
        )
    print(f"GOAL errors: {errors} (goal {GOAL_ERRORS}: {verdict(errors <= GOAL_ERRORS)})")
    print(f"GOAL p95 overall: {p95:.0f} ms (goal <= {GOAL_P95_MS:.0f} ms: {verdict(p95 <= GOAL_P95_MS)})")
    print(
        f"GOAL job slowdown under load: {after:.1f} / {before:.1f} s = {100 * slowdown:+.0f} %"
        f" (goal <= +{100 * GOAL_SLOWDOWN:.0f} %: {verdict(slowdown <= GOAL_SLOWDOWN)})"
    )


if __name__ == "__main__":
    main()
