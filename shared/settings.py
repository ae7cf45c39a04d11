"""The one settings object. Nothing else in the project reads the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_PATH = PROJECT_ROOT / "models" / "imdb_lstm.npz"
DEFAULT_IMDB_DIR = PROJECT_ROOT.parent / "shared" / "imdb"
DEFAULT_INSTANCE_DIR = PROJECT_ROOT / "instance"


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"environment variable {name} must be an integer, got {raw!r}") from exc


@dataclass(frozen=True)
class Settings:
    """Where things are and how big batches are; read once from the environment."""

    model_path: Path = DEFAULT_MODEL_PATH
    imdb_dir: Path = DEFAULT_IMDB_DIR
    instance_dir: Path = DEFAULT_INSTANCE_DIR
    database_url: str = ""
    redis_url: str = ""
    api_token: str = ""
    api_url: str = "http://127.0.0.1:5000"
    batch_size: int = 250
    engine_chunk_size: int = 2000

    @property
    def effective_database_url(self) -> str:
        """The configured database, or a SQLite file under the instance folder."""
        return self.database_url or f"sqlite:///{self.instance_dir / 'relevance.sqlite3'}"

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        return cls(
            model_path=Path(env.get("MODEL_PATH") or DEFAULT_MODEL_PATH),
            imdb_dir=Path(env.get("IMDB_DIR") or DEFAULT_IMDB_DIR),
            instance_dir=Path(env.get("INSTANCE_DIR") or DEFAULT_INSTANCE_DIR),
            database_url=env.get("DATABASE_URL", ""),
            redis_url=env.get("REDIS_URL", ""),
            api_token=env.get("API_TOKEN", ""),
            api_url=env.get("RELEVANCE_API_URL") or "http://127.0.0.1:5000",
            batch_size=_env_int("BATCH_SIZE", 250),
            engine_chunk_size=_env_int("ENGINE_CHUNK_SIZE", 2000),
        )
