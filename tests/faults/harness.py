"""Real parts the fault tests can break: a redis-server and a PostgreSQL cluster of their own (never the
machine's), and a deployment's worker and beat processes, started with the settings under test."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import psycopg
import pytest
import redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from shared.jobs.lifecycle import JobSpec, create_job, model_info
from shared.jobs.queue import BULK_QUEUE, EXPLAIN_BATCH, make_celery
from shared.settings import PROJECT_ROOT, Settings
from shared.store.db import session_factory
from shared.store.models import BatchDelivery, Explanation, Job
from tests.helpers.service import POSTGRES_ADMIN_URL, prepare_database, settings_env

DEADLINE = 120.0  # seconds any one wait may take before the test fails
POSTGRES_BIN = (
    sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1] if Path("/usr/lib/postgresql").is_dir() else None
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_until(check: Callable[[], Any], what: str, deadline: float = DEADLINE, on_fail: str = "") -> Any:
    """Poll `check` until it returns something truthy (exceptions count as not yet); fail when time runs
    out."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        with contextlib.suppress(Exception):
            value = check()
            if value:
                return value
        time.sleep(0.05)
    pytest.fail(f"timed out after {deadline:.0f} s waiting for {what}{on_fail}")


class RedisServer:
    """A redis-server without persistence on a free port: kill it and it comes back empty."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "no", "--dir", str(self.folder)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(redis.Redis(port=self.port, socket_timeout=1).ping, f"redis-server on port {self.port}")

    def kill(self) -> None:
        """SIGKILL: the queued and unacknowledged batches are gone with it."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


class PostgresCluster:
    """A PostgreSQL cluster in a temporary folder (initdb runs as the postgres user), on a free port."""

    def __init__(self) -> None:
        assert POSTGRES_BIN is not None, "PostgreSQL's binaries are not under /usr/lib/postgresql"
        self.folder = Path(tempfile.mkdtemp(prefix="relevance-faults-pg-"))
        shutil.chown(self.folder, "postgres", "postgres")
        self.port = free_port()
        self.running = False
        self._as_postgres(
            POSTGRES_BIN / "initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "--no-sync"
        )

    @property
    def data(self) -> str:
        return str(self.folder / "data")

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *command: str | Path) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *map(str, command)], check=True, capture_output=True
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = self.folder / "server.log"
        assert POSTGRES_BIN is not None
        self._as_postgres(POSTGRES_BIN / "pg_ctl", "-D", self.data, "-l", log, "-o", options, "-w", "start")
        self.running = True

    def stop(self) -> None:
        """Fast shutdown: every connection is closed, as in a database restart."""
        assert POSTGRES_BIN is not None
        self._as_postgres(POSTGRES_BIN / "pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop")
        self.running = False

    def remove(self) -> None:
        if self.running:
            self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.contextmanager
def own_postgres() -> Iterator[PostgresCluster]:
    """A started PostgreSQL cluster of the test's own (the test may stop and start it), removed afterwards."""
    server = PostgresCluster()
    try:
        server.start()
        yield server
    finally:
        server.remove()


@contextlib.contextmanager
def fresh_database(admin_url: str = POSTGRES_ADMIN_URL) -> Iterator[str]:
    """A new database on the given server, dropped afterwards; yields its URL."""
    name = f"relevance_faults_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with (
            contextlib.suppress(psycopg.OperationalError),
            psycopg.connect(admin_url, autocommit=True) as admin,
        ):
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Process:
    """A worker or beat process, in a process group of its own (so the whole of it can be killed)."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self) -> str:
        return f"\n--- {self.name} log ---\n{self.log.read_text(errors='replace')[-4000:]}"

    def kill_all(self) -> None:
        """SIGKILL to the main process and its pool at once: a worker machine that dies."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait()

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill_all()
        with contextlib.suppress(ProcessLookupError):  # pool processes a killed main process left behind
            os.killpg(self.popen.pid, signal.SIGKILL)


@dataclass
class Deployment:
    """One deployment under test: its settings, the processes started for it, and what the test reads."""

    settings: Settings
    folder: Path
    processes: list[Process] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.celery = make_celery(self.settings)
        self.sessions: sessionmaker[Session] = session_factory(self.settings.effective_database_url)

    def _start(self, name: str, command: list[str]) -> Process:
        log = self.folder / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "worker", *command],
                cwd=PROJECT_ROOT,
                env=settings_env(self.settings),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        process = Process(name, popen, log)
        self.processes.append(process)
        return process

    def start_worker(self, name: str, concurrency: int = 2) -> Process:
        """A plain `celery -A worker worker` (both queues), answering a ping before this returns."""
        node = f"{name}-{uuid.uuid4().hex[:6]}@%h"
        command = ["worker", "-c", str(concurrency), "-n", node, "--without-mingle", "--without-gossip"]
        worker = self._start(name, [*command, "--loglevel", "INFO"])
        hostname = node.replace("%h", socket.gethostname())
        self.wait_for(lambda: self.celery.control.ping([hostname], timeout=0.5), f"{name} to answer a ping")
        return worker

    def start_beat(self) -> Process:
        return self._start(
            "beat", ["beat", "--loglevel", "INFO", "--schedule", str(self.folder / "beat-schedule")]
        )

    def stop(self) -> None:
        for process in self.processes:
            process.stop()

    def logs(self) -> str:
        """The end of every process's log, for a failure message."""
        return "".join(p.tail() for p in self.processes)

    def log_text(self) -> str:
        """Every process's whole log."""
        return "".join(p.log.read_text(errors="replace") for p in self.processes)

    def wait_for(self, check: Callable[[], Any], what: str, deadline: float = DEADLINE) -> Any:
        return wait_until(check, what, deadline, on_fail=self.logs())

    def submit(self, spec: JobSpec) -> int:
        """Create a job and queue its batches, as the API does."""
        s = self.settings
        with self.sessions() as session:
            job, batches = create_job(
                session,
                spec,
                model_info(s.model_path),
                batch_size=s.batch_size,
                max_texts=s.max_texts,
                max_text_chars=s.max_text_chars,
            )
            session.commit()
        for batch in batches:
            self.celery.send_task(EXPLAIN_BATCH, args=[job.id, batch], queue=BULK_QUEUE)
        return job.id

    def submit_until(self, spec: JobSpec, rows: float) -> int:
        """Submit a job and wait until it has stored this many rows (the moment to inject a fault)."""
        job_id = self.submit(spec)
        self.wait_for(lambda: self.rows(job_id)[0] >= rows, f"job {job_id} to store {rows:.0f} rows")
        return job_id

    def job(self, job_id: int) -> Job:
        with self.sessions() as session:
            return session.get_one(Job, job_id)

    def wait_for_job(self, job_id: int, deadline: float = DEADLINE) -> Job:
        """Until the job leaves queued and running."""

        def finished() -> Job | None:
            job = self.job(job_id)
            return job if job.status not in ("queued", "running") else None

        return cast(Job, self.wait_for(finished, f"job {job_id} to finish", deadline))

    def rows(self, job_id: int) -> tuple[int, int]:
        """(rows, distinct review ids) stored for the job."""
        with self.sessions() as session:
            query = select(func.count(), func.count(func.distinct(Explanation.review_id))).where(
                Explanation.job_id == job_id
            )
            count, distinct = session.execute(query).one()
            return count, distinct

    def max_starts(self, job_id: int) -> int:
        """The most starts any batch of the job counted."""
        with self.sessions() as session:
            query = select(func.max(BatchDelivery.starts)).where(BatchDelivery.job_id == job_id)
            return session.scalar(query) or 0

    def assert_complete(self, job_id: int, total: int, failed: int = 0) -> Job:
        """The guarantee every fault test checks: succeeded, one row per review, counters equal to rows."""
        job = self.job(job_id)
        assert job.status == "succeeded", (job.status, job.error, self.logs())
        assert self.rows(job_id) == (total, total)
        assert (job.total, job.done + job.failed, job.failed) == (total, total, failed)
        return job


def deployment_settings(
    folder: Path, model: Path, imdb: Path, database_url: str, redis_url: str, **overrides: Any
) -> Settings:
    """Settings of a deployment of its own (instance folder, key prefix), its database migrated and the IMDB
    folder's test split imported."""
    settings = Settings(
        model_path=model,
        imdb_dir=imdb,
        instance_dir=folder / "instance",
        database_url=database_url,
        redis_url=redis_url,
        redis_prefix=f"faults-{uuid.uuid4().hex[:8]}:",
        **overrides,
    )
    prepare_database(settings)
    return settings
