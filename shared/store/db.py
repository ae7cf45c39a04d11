"""Database engine and sessions, the same code for SQLite and PostgreSQL; used by the api and the workers."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 60_000  # workers and the web process write to one SQLite file

MIGRATIONS = "migrations:."  # Alembic's script location: the importable `migrations` package
T = TypeVar("T")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL lets readers run while a worker writes; foreign keys are off by default in SQLite."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(url: str) -> Engine:
    """An engine for the URL; a SQLite file gets its folder and connection settings for several writers."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


@functools.cache
def session_factory(url: str) -> sessionmaker[Session]:
    """One engine and session factory per database URL and process (created lazily, so after a fork)."""
    return sessionmaker(make_engine(url), expire_on_commit=False)


def insert_for(session: Session) -> Any:
    """The dialect's INSERT construct, which has on_conflict_do_nothing/do_update on SQLite and PostgreSQL."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert
    return sqlite.insert


def migrate(url: str) -> None:
    """`alembic upgrade head` on the given database (for the demo and the tests); needs no checkout."""
    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    config.attributes["database_url"] = url
    command.upgrade(config, "head")


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of `size` items (the last may be shorter): rows per INSERT, reviews per batch."""
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk
