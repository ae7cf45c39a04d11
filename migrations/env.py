"""Alembic environment: the database comes from the project settings, the schema from shared.store.models."""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context

from shared.settings import Settings
from shared.store.db import make_engine
from shared.store.models import Base

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name)

target_metadata = Base.metadata


def database_url() -> str:
    """An URL given by a caller (tests) wins over the environment's."""
    given = config.attributes.get("database_url")
    return str(given) if given else Settings.from_env().effective_database_url


def run_migrations_offline() -> None:
    """Emit the SQL instead of running it (`alembic upgrade head --sql`)."""
    context.configure(url=database_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(database_url())
    with engine.connect() as connection:
        # render_as_batch: SQLite can only change tables by copying them.
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
