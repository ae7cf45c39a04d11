"""Starting and stopping the service's processes (web server, Celery workers, beat) for `make demo`,
`make bench-service` and `make bench-load`: each child runs in its own session, so Ctrl-C reaches only this
process, which then stops every child it started (TERM, then KILL after a grace period). Also the benchmarks'
database of their own, filled with the IMDB test split."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import psycopg
import requests

from shared.settings import PROJECT_ROOT, sqlalchemy_url
from shared.store.datasets import find_split, import_reviews
from shared.store.db import migrate, session_factory

GRACE_SECONDS = 20.0


class Stack:
    """The children started so far; `stop` ends them in reverse order."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        log_dir.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, args: list[str], env: dict[str, str]) -> None:
        with (self.log_dir / f"{name}.log").open("wb") as log:
            child = subprocess.Popen(
                [sys.executable, "-m", *args],
                cwd=PROJECT_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.children.append((name, child))

    def check(self) -> None:
        """Raise if a child has exited (with the end of its log)."""
        for name, child in self.children:
            if child.poll() is not None:
                tail = (self.log_dir / f"{name}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{name} exited with code {child.returncode}:\n{tail}")

    def wait_for(self, check: Callable[[], Any], what: str, deadline: float = 120.0) -> Any:
        """Poll until `check` returns something truthy; fail early if a child dies."""
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            self.check()
            value = check()
            if value:
                return value
            time.sleep(0.1)
        raise RuntimeError(f"timed out waiting for {what}")

    def stop(self) -> None:
        for _, child in reversed(self.children):
            if child.poll() is None:
                child.terminate()
        end = time.monotonic() + GRACE_SECONDS
        for _, child in reversed(self.children):
            try:
                child.wait(timeout=max(end - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        self.children.clear()


def answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=5).status_code < 500
    except requests.RequestException:
        return False


def worker_args(queue: str, processes: int) -> list[str]:
    quiet = ["--without-mingle", "--without-gossip", "--loglevel", "INFO"]
    return [
        "celery",
        "-A",
        "worker",
        "worker",
        "-Q",
        queue,
        "-c",
        str(processes),
        "-n",
        f"{queue}@%h",
        *quiet,
    ]


def beat_args(schedule: Path) -> list[str]:
    """Beat (the re-queue sweep's schedule), its schedule file where the caller says, not in the cwd."""
    return ["celery", "-A", "worker", "beat", "--loglevel", "INFO", "--schedule", str(schedule)]


def start_service(stack: Stack, env: dict[str, str], port: int, bulk_processes: int) -> None:
    """Web server (gunicorn, one access-log line per request), the bulk worker (one process per core by
    default) and the interactive one."""
    stack.start("worker-bulk", worker_args("bulk", bulk_processes), env)
    stack.start("worker-interactive", worker_args("interactive", 1), env)
    web = ["gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "2", "--threads", "4"]
    stack.start("web", [*web, "--access-logfile", "-", "api:create_app()"], env)
    stack.wait_for(lambda: answers(f"http://127.0.0.1:{port}/healthz"), "the web server")


def stop_on_signals() -> None:
    """SIGINT and SIGTERM both raise KeyboardInterrupt, so `finally: stack.stop()` runs either way. SIGINT is
    installed explicitly: a process started in the background (`make demo &`) inherits it ignored."""

    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)


def child_env(**overrides: str) -> dict[str, str]:
    """This process's environment (PATH and the like) plus the settings the children must share, and a
    random SECRET_KEY for this run unless one is set (the web process refuses to start without one as soon
    as REDIS_URL is set, which these runs always pass)."""
    env = {**os.environ, **overrides}
    env["SECRET_KEY"] = env.get("SECRET_KEY") or secrets.token_hex(32)
    return env


def benchmark_database(admin_url: str, name: str, imdb_dir: Path) -> str:
    """Drop and create the database `name` on the admin URL's server (so the figures count this run only),
    migrate it and import the IMDB test split; its plain PostgreSQL URL."""
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    migrate(sqlalchemy_url(url))
    source, reviews = find_split(imdb_dir, "test")
    with session_factory(sqlalchemy_url(url))() as session:
        import_reviews(session, "test", source, reviews)
    return url
