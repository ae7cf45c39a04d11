"""The package as users get it: a wheel (not the checkout) carries the model and the migrations, and its
`relevance` explains a text and migrates a database from any working directory with no data folder; the
command line starts without the database code."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from shared.settings import PROJECT_ROOT

SOURCES = ("pyproject.toml", "api", "shared", "worker", "migrations")
PACKAGE_FILES = (
    "shared/relevance/model/imdb_lstm.npz",
    "shared/relevance/model/README.md",
    "migrations/env.py",
    "migrations/script.py.mako",
    "migrations/versions/0001_service_schema.py",
)
DATABASE_CODE = ("sqlalchemy", "alembic")
LOCKS = {  # each lock file and the optional dependency groups it covers besides the project's own
    "requirements.lock": (),
    "requirements-dev.lock": ("dev",),
    "requirements-train.lock": ("dev", "train"),
}


def run(command: list[str], cwd: Path, **env: str) -> str:
    """Run a command with a clean environment (no PYTHONPATH, no IMDB_DIR); its output, or the test fails."""
    clean = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), **env}
    done = subprocess.run(command, cwd=cwd, env=clean, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a copy of the sources (so the checkout gains no build folders), offline."""
    source = tmp_path_factory.mktemp("source")
    for name in SOURCES:
        origin = PROJECT_ROOT / name
        if origin.is_dir():
            shutil.copytree(origin, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(origin, source / name)
    out = tmp_path_factory.mktemp("wheel")
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index"]
    run([*pip_wheel, "--wheel-dir", str(out), str(source)], cwd=source)
    (built,) = out.glob("lstm_relevance-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment outside the checkout with the wheel installed; its dependencies come from
    the test environment's site-packages (a .pth line), so no network is needed."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(
        run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], venv).strip()
    )
    (site / "test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip_install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index"]
    run([*pip_install, str(wheel)], cwd=venv)
    return venv


def locked_versions(lock: Path) -> dict[str, str]:
    """name -> pinned version of a pip-tools lock file."""
    pins = [line.split("==") for line in lock.read_text().splitlines() if "==" in line and line[0].isalnum()]
    return {canonicalize_name(name): version.split()[0] for name, version in pins}


@pytest.mark.parametrize("lock", LOCKS)
def test_the_lock_files_pin_every_dependency_within_its_bounds(lock: str) -> None:
    """A dependency added to pyproject.toml without `make lock` fails here, naming the command."""
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in project["dependencies"]]
    wanted += [Requirement(r) for group in LOCKS[lock] for r in project["optional-dependencies"][group]]
    pinned = locked_versions(PROJECT_ROOT / lock)
    for requirement in wanted:
        version = pinned.get(canonicalize_name(requirement.name))
        assert version is not None, f"{requirement.name} is not in {lock}: run `make lock`"
        assert requirement.specifier.contains(version), (
            f"{lock} pins {requirement.name} {version}: `make lock`"
        )


def test_the_wheel_carries_the_model_and_the_migrations(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert set(PACKAGE_FILES) <= names
        model = archive.read("shared/relevance/model/imdb_lstm.npz")
    assert model == (PROJECT_ROOT / "shared/relevance/model/imdb_lstm.npz").read_bytes()
    assert not any(name.startswith(("tests/", "scripts/", "docs/")) for name in names)


def test_installed_relevance_explains_from_elsewhere_without_a_data_folder(
    installed: Path, tmp_path: Path
) -> None:
    where = run([str(installed / "bin" / "python"), "-c", "import shared; print(shared.__file__)"], tmp_path)
    assert where.startswith(str(installed)), where  # the installed copy, not the checkout
    relevance = str(installed / "bin" / "relevance")
    output = run([relevance, "explain", "a great film"], tmp_path, IMDB_DIR=str(tmp_path / "no-such-folder"))
    assert "predicted: positive" in output
    assert list(tmp_path.iterdir()) == []  # nothing written where it ran


def test_installed_package_migrates_a_database_from_elsewhere(installed: Path, tmp_path: Path) -> None:
    database = tmp_path / "relevance.sqlite3"
    migrate = f"from shared.store.db import migrate; migrate('sqlite:///{database}')"
    run([str(installed / "bin" / "python"), "-c", migrate], tmp_path)
    with sqlite3.connect(database) as connection:
        (version,) = connection.execute("SELECT version_num FROM alembic_version").fetchone()
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    heads = sorted((PROJECT_ROOT / "migrations/versions").glob("*.py"))
    assert version == heads[-1].name.split("_")[0]
    assert {"jobs", "reviews", "explanations"} <= tables


def imported_modules(*arguments: str) -> set[str]:
    """Top-level modules that `relevance ARGUMENTS` imports, from Python's own import log (-X importtime)."""
    program = f"from shared.cli import main; main({list(arguments)!r})"
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", program], capture_output=True, text=True, cwd=PROJECT_ROOT
    )
    assert done.returncode == 0, done.stderr
    lines = [
        line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")
    ]
    return {name.split(".")[0] for name in lines}


@pytest.mark.parametrize("arguments", [("--help",), ("explain", "a great film")])
def test_the_command_line_starts_without_the_database_code(arguments: tuple[str, ...]) -> None:
    modules = imported_modules(*arguments)
    assert "click" in modules and "shared" in modules  # the log is read right
    assert not modules & set(DATABASE_CODE)
