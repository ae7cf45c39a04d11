"""Probes for an orchestrator: `/healthz` says the process answers (it touches nothing else); `/readyz` says
it can serve: the database answers and its migrations are at head, and the broker answers. Both are open (no
token) and name only the check that failed; the log has the reason."""

from __future__ import annotations

import functools

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Blueprint, Response, current_app, jsonify
from sqlalchemy.orm import Session

from api.context import celery, sessions
from shared.store.db import MIGRATIONS

bp = Blueprint("health", __name__)
BROKER_TIMEOUT = 2.0  # seconds: a probe must answer well within an orchestrator's own timeout


@functools.cache
def migration_heads() -> frozenset[str]:
    """The revisions `alembic upgrade head` leads to (read once per process from the installed scripts)."""
    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    return frozenset(ScriptDirectory.from_config(config).get_heads())


def _database() -> str:
    session: Session = sessions()()
    try:
        with session.connection() as connection:
            current = set(MigrationContext.configure(connection).get_current_heads())
    finally:
        session.close()
    return "ok" if current == migration_heads() else "migrations not at head"


def _broker() -> str:
    with celery().connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, interval_start=0, timeout=BROKER_TIMEOUT)
    return "ok"


@bp.get("/healthz")
def healthz() -> Response:
    """The process is alive and serving requests."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> Response:
    """200 when every check says "ok", else 503 with the failed checks named."""
    checks: dict[str, str] = {}
    for name, check in (("database", _database), ("broker", _broker)):
        try:
            checks[name] = check()
        except Exception as exc:  # any failure means not ready; the reason goes to the log only
            current_app.logger.warning("readyz: %s check failed: %s", name, exc)
            checks[name] = "unreachable"
    ready = all(value == "ok" for value in checks.values())
    response = jsonify(status="ready" if ready else "not ready", checks=checks)
    response.status_code = 200 if ready else 503
    return response
