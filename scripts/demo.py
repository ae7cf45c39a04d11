"""`make demo`: migrate, import the IMDB test set, start the embedded Redis, the workers, beat and the web
server, submit the 25,000-review job with a progress bar, print the URL; Ctrl-C (or SIGTERM, even when started
in the background) stops everything it started.

The demo is the one place without settings: SQLite and the embedded Redis under the instance folder, and a
random SECRET_KEY for this run shared by its processes (scripts.stack.child_env; unless SECRET_KEY is set)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from scripts.stack import Stack, beat_args, child_env, start_service, stop_on_signals
from shared.cli.jobs import Api, describe, follow
from shared.jobs.queue import broker_url, stop_embedded_redis
from shared.settings import Settings
from shared.store.db import migrate, session_factory
from shared.store.models import Dataset


def ensure_imported(settings: Settings) -> None:
    """Run `relevance import-imdb` unless the test set is in the database (it may offer a download)."""
    with session_factory(settings.effective_database_url)() as session:
        if session.get(Dataset, "imdb-test") is not None:
            return
    subprocess.run([str(Path(sys.executable).with_name("relevance")), "import-imdb"], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--limit", type=int, help="only the first N reviews (default: all 25,000)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="bulk worker processes")
    args = parser.parse_args()

    settings = Settings.from_env()
    print(f"database: {settings.effective_database_url}")
    migrate(settings.effective_database_url)
    ensure_imported(settings)
    redis_url = broker_url(
        settings
    )  # the embedded Redis lives as long as this process, unless REDIS_URL is set
    api_url = f"http://127.0.0.1:{args.port}"
    env = child_env(REDIS_URL=redis_url, RELEVANCE_API_URL=api_url)
    stack = Stack(settings.instance_dir / "logs")
    stop_on_signals()
    try:
        print(f"redis: {redis_url}; starting {args.workers} bulk + 1 interactive workers, beat and the web")
        stack.start("beat", beat_args(settings.instance_dir / "celerybeat-schedule"), env)
        start_service(stack, env, args.port, args.workers)
        api = Api(replace(settings, api_url=api_url))
        body = {"dataset": "imdb-test", "limit": args.limit}
        job = api.call("POST", "/api/jobs", json=body).json()
        print(f"job {job['id']}: {job['total']} reviews; open {api_url}/ (API: {api_url}{job['url']})")
        print(describe(follow(api, job["id"])))
        print(f"\nbrowse the results at {api_url}/ ; Ctrl-C stops the web server, the workers and Redis")
        while True:
            stack.check()
            time.sleep(1)
    except KeyboardInterrupt:
        print("\nstopping ...")
    finally:
        stack.stop()
        stop_embedded_redis(settings.instance_dir)


if __name__ == "__main__":
    main()
