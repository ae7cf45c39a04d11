"""docker-compose.yml cannot rot: its migrate, web, worker and beat commands run here for real, with the
environment the file gives them (hosts pointed at this machine's PostgreSQL and Redis, a database and a key
prefix of the test's own), as an unprivileged user in a read-only copy of what the Dockerfile copies into
/app (from the working tree, as `docker build` does), with the Dockerfile's ENV, as the image runs them. A
small job goes through them, beat writes its schedule into its volume, and nothing is written into the app
folder.

This machine has no container engine: the images' services (PostgreSQL, Redis) are the machine's own, named
volumes are folders of the test's own (owned by the user), container paths in the commands and the environment
are mapped to those folders, and the console scripts are the venv's. The venv's interpreter lives under
/root/.pyenv and /root is mode 700, so `runuser -u nobody` cannot even start it; instead `setpriv` switches to
nobody/nogroup with no supplementary groups and keeps one capability, to read and search any folder
(CAP_DAC_READ_SEARCH, inheritable and ambient so it survives the exec): the user reads everything root can and
writes only where nobody may. So a write into the app folder (or a home folder, or the working directory)
fails here, in CI, as it would in the container.

Every wait fails at once, with the logs as they are then, when a process exits."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
import requests
import yaml
from sqlalchemy.engine import make_url

from shared.settings import PROJECT_ROOT
from tests.faults.harness import free_port
from tests.helpers.service import POSTGRES_ADMIN_URL

COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yml"
DOCKERFILE = PROJECT_ROOT / "Dockerfile"
USER = "nobody"
REDIS_URL = "redis://127.0.0.1:6379/15"
AS_USER = ["setpriv", f"--reuid={USER}", "--regid=nogroup", "--clear-groups"]
AS_USER += ["--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]
DEADLINE = 90.0
VARIABLE = re.compile(r"\$\$|\$\{(\w+)(?::([-?])([^}]*))?\}")


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose's variable syntax in every string of a parsed value: `$$`, `${VAR}`, `${VAR:-default}` and
    `${VAR:?message}` (which fails when VAR is unset or empty, as docker-compose does)."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, kind, argument = match.groups()
        if env.get(name):
            return env[name]
        if kind == "?":
            raise KeyError(f"{name} is required: {argument}")
        return argument if kind == "-" else ""

    return VARIABLE.sub(substitute, value)


def compose(env: Mapping[str, str]) -> dict[str, Any]:
    parsed: dict[str, Any] = interpolate(yaml.safe_load(COMPOSE_FILE.read_text()), env)
    return parsed


def test_secrets_have_no_defaults_and_the_services_their_health_checks() -> None:
    for missing in ("SECRET_KEY", "POSTGRES_PASSWORD"):
        given = {"SECRET_KEY": "k", "POSTGRES_PASSWORD": "p", missing: ""}
        with pytest.raises(KeyError, match=missing):
            compose(given)
    services = compose({"SECRET_KEY": "k", "POSTGRES_PASSWORD": "p"})["services"]
    assert {"postgres", "redis", "migrate", "web", "worker", "beat"} <= set(services)
    for name in ("postgres", "redis", "web", "worker", "worker-interactive"):
        assert services[name]["healthcheck"]["test"], name
    assert "--appendonly" in services["redis"]["command"] and "yes" in services["redis"]["command"]
    assert "SECRET_KEY" not in services["worker"]["environment"]  # only the web process signs cookies
    for name, service in services.items():  # everything a container writes lives in a volume
        if name in ("postgres", "redis", "beat"):
            assert any(":/" in volume and not volume.endswith(":ro") for volume in service["volumes"]), name


def image_env() -> dict[str, str]:
    """The Dockerfile's ENV lines (KEY=VALUE form)."""
    pairs = re.findall(r"^ENV\s+(.+)$", DOCKERFILE.read_text(), re.M)
    return dict(item.split("=", 1) for line in pairs for item in line.split())


def app_files() -> list[tuple[str, str]]:
    """(source, destination under /app) of the Dockerfile's COPY lines."""
    copies = re.findall(r"^COPY\s+(.+)$", DOCKERFILE.read_text(), re.M)
    pairs = []
    for line in copies:
        *sources, destination = line.split()
        pairs += [(source, destination if destination != "./" else source) for source in sources]
    return pairs


@dataclass
class Rig:
    """The read-only app folder, the user's interpreter wrappers, the volumes and the substitutions."""

    folder: Path
    app: Path
    port: int
    database_url: str
    prefix: str
    imdb: Path
    processes: dict[str, subprocess.Popen[bytes]]

    @property
    def logs(self) -> Path:
        return self.folder / "logs"

    def tails(self) -> str:
        """The end of every log, as it is now."""
        ends = [f"\n--- {p.name} ---\n{p.read_text(errors='replace')[-3000:]}" for p in self.logs.iterdir()]
        return "".join(sorted(ends))

    def check_running(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                pytest.fail(f"{name} exited with {process.returncode}{self.tails()}")

    def wait(self, check: Callable[[], Any], what: str, deadline: float = DEADLINE) -> Any:
        """Poll `check` until it returns something truthy (a refused connection counts as not yet); fail at
        once when a started process exits, or when time runs out, with the logs as they are then."""
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            self.check_running()
            try:
                value = check()
            except requests.RequestException:
                value = None
            if value:
                return value
            time.sleep(0.05)
        pytest.fail(f"timed out after {deadline:.0f} s waiting for {what}{self.tails()}")

    def environment(self, service: dict[str, Any]) -> dict[str, str]:
        env = {
            "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
            "HOME": "/nonexistent",  # the user's home is not writable either
            "HOSTNAME": socket.gethostname(),
            "PYTHONPATH": str(self.app),  # the image imports the project from /app (and its installed copy)
            **image_env(),
        }
        env.update({key: str(value) for key, value in service.get("environment", {}).items()})
        env["DATABASE_URL"] = self.database_url
        env["REDIS_URL"] = REDIS_URL
        env["REDIS_PREFIX"] = self.prefix
        return {key: self.local(value) for key, value in env.items()}

    def volumes(self, service: dict[str, Any]) -> dict[str, Path]:
        """Container path -> local folder: bind mounts as given, named volumes as folders of the user."""
        mounts = {}
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith((".", "/")):
                mounts[target] = (COMPOSE_FILE.parent / source).resolve()
            else:
                local = self.folder / "volumes" / source
                local.mkdir(parents=True, exist_ok=True)
                shutil.chown(local, USER)
                mounts[target] = local
        return mounts

    def local(self, value: str, mounts: Mapping[str, Path] | None = None) -> str:
        for target, source in (mounts or {}).items():
            value = value.replace(target, str(source))
        return value.replace("0.0.0.0:8000", f"127.0.0.1:{self.port}").replace(":8000/", f":{self.port}/")

    def command(self, service: dict[str, Any], args: list[str]) -> list[str]:
        """As the user, with exactly the service's environment (paths made local)."""
        mounts = self.volumes(service)
        env = {key: self.local(value, mounts) for key, value in self.environment(service).items()}
        assignments = [f"{key}={value}" for key, value in env.items()]
        return [*AS_USER, "/usr/bin/env", "-i", *assignments, *(self.local(arg, mounts) for arg in args)]

    def run(self, service: dict[str, Any], args: list[str], log: Path) -> subprocess.CompletedProcess[bytes]:
        with log.open("wb") as out:
            return subprocess.run(
                self.command(service, args),
                cwd=self.app,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=DEADLINE,
            )

    def start(self, name: str, service: dict[str, Any]) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open("wb") as out:
            process = subprocess.Popen(
                self.command(service, service["command"]),
                cwd=self.app,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes[name] = process
        return process


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.fixture
def rig(assets: tuple[Path, Path]) -> Iterator[Rig]:
    # Not under pytest's tmp_path: its folders are private to root.
    folder = Path(tempfile.mkdtemp(prefix="relevance-compose-"))
    folder.chmod(0o755)
    (folder / "logs").mkdir()
    app = folder / "app"
    app.mkdir()
    for source, destination in app_files():
        target = app / destination
        if (PROJECT_ROOT / source).is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
            shutil.copytree(PROJECT_ROOT / source, target, ignore=ignore)
        else:
            shutil.copy2(PROJECT_ROOT / source, target)
    subprocess.run(["chmod", "-R", "a-w", str(app)], check=True)
    name = f"relevance_compose_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    database_url = str(make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False))
    rig = Rig(folder, app, free_port(), database_url, f"compose-{uuid.uuid4().hex[:8]}:", assets[1], {})
    try:
        yield rig
    finally:
        for process in rig.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in rig.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        server = redis.Redis.from_url(REDIS_URL)
        keys = list(server.scan_iter(match=f"{rig.prefix}*"))
        if keys:
            server.delete(*keys)
        subprocess.run(["chmod", "-R", "u+w", str(folder)], check=True)
        shutil.rmtree(folder, ignore_errors=True)


def test_the_compose_commands_run_a_job_as_an_unprivileged_user_in_a_read_only_app_folder(rig: Rig) -> None:
    outside = {
        "SECRET_KEY": secrets.token_hex(16),
        "POSTGRES_PASSWORD": "unused",
        "IMDB_HOST_DIR": str(rig.imdb),
        "LOG_LEVEL": "DEBUG",
    }
    services = compose(outside)["services"]
    logs = rig.logs
    before = snapshot(rig.app)

    # The image's processes import the project from /app (a missing COPY line shows here, not in production).
    where = "import api, migrations, shared, worker; print(api.__file__, migrations.__file__)"
    found = subprocess.run(
        rig.command(services["web"], ["python", "-c", where]), cwd=rig.app, capture_output=True, text=True
    )
    assert found.returncode == 0, found.stderr
    assert all(path.startswith(str(rig.app)) for path in found.stdout.split()), found.stdout

    migrate = rig.run(services["migrate"], services["migrate"]["command"], logs / "migrate.log")
    assert migrate.returncode == 0, (logs / "migrate.log").read_text()

    # Without SECRET_KEY the web command refuses to start, saying why.
    keyless = {key: value for key, value in services["web"].items()}
    keyless["environment"] = {k: v for k, v in services["web"]["environment"].items() if k != "SECRET_KEY"}
    refused = rig.run(keyless, keyless["command"], rig.folder / "web-keyless.log")
    assert refused.returncode != 0 and "SECRET_KEY is not set" in (rig.folder / "web-keyless.log").read_text()

    for name in ("web", "worker", "beat"):
        rig.start(name, services[name])
    base = f"http://127.0.0.1:{rig.port}"
    rig.wait(lambda: requests.get(f"{base}/readyz", timeout=5).ok, "/readyz")
    for name in ("web", "worker"):  # the containers' health checks pass too
        health = services[name]["healthcheck"]["test"]
        args = ["sh", "-c", health[1]] if health[0] == "CMD-SHELL" else health[1:]
        log = logs / f"{name}-health.log"
        rig.wait(
            lambda name=name, args=args, log=log: rig.run(services[name], args, log).returncode == 0, name
        )

    created = requests.post(f"{base}/api/jobs", json={"dataset": "imdb-test", "limit": 30}, timeout=10)
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]

    def finished() -> dict[str, Any] | None:
        job: dict[str, Any] = requests.get(f"{base}/api/jobs/{job_id}", timeout=10).json()
        return job if job["status"] not in ("queued", "running") else None

    job = rig.wait(finished, f"job {job_id} to finish")
    assert (job["status"], job["done"], job["failed"]) == ("succeeded", 30, 0), job
    with psycopg.connect(rig.database_url) as connection:
        rows = connection.execute(
            "SELECT count(*), count(DISTINCT review_id) FROM explanations WHERE job_id = %s", [job_id]
        ).fetchone()
    assert rows == (30, 30)
    assert requests.get(f"{base}/readyz", timeout=5).json() == {
        "status": "ready",
        "checks": {"broker": "ok", "database": "ok"},
    }
    # Beat writes its schedule into its volume (the path in its command is the volume's mount point).
    rig.wait(lambda: any((rig.folder / "volumes" / "beat").iterdir()), "beat's schedule in its volume")
    rig.check_running()

    # A line per request (gunicorn's access log) and per batch (the worker's log).
    assert re.search(r'"POST /api/jobs HTTP/1.1" 202 \d+ \d+us', (logs / "web.log").read_text())
    assert re.search(rf"batch job={job_id} reviews=30 seconds=", (logs / "worker.log").read_text())
    assert snapshot(rig.app) == before  # nothing written into the app folder
