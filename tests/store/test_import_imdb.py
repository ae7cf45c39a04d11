"""`relevance import-imdb`: JSONL or the official aclImdb folder, idempotent, and the verified download
(tested against an archive built here and served on localhost)."""

from __future__ import annotations

import hashlib
import io
import tarfile
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from shared.cli import main
from shared.store.db import migrate, session_factory
from shared.store.models import Dataset, Review

ACL_FILES = {
    "aclImdb/test/pos/0_10.txt": "Wonderful.<br /><br />Caf\u00e9!",
    "aclImdb/test/pos/12_7.txt": "Good enough",
    "aclImdb/test/neg/3_1.txt": "Awful \u0085 film",
    "aclImdb/train/neg/5_4.txt": "Meh",
    "aclImdb/train/unsup/9_0.txt": "unlabelled: never imported",
    "aclImdb/README": "the archive's readme",
}


def build_archive(path: Path) -> bytes:
    with tarfile.open(path, "w:gz") as tar:
        for name, text in ACL_FILES.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path.read_bytes()


@pytest.fixture
def database(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    migrate(url)
    return url


def reviews(url: str) -> list[tuple[str, str | None, int | None, int | None, str]]:
    with session_factory(url)() as session:
        rows = session.scalars(select(Review).order_by(Review.id))
        return [(r.id, r.dataset, r.label, r.rating, r.text) for r in rows]


def run(url: str, imdb_dir: Path, *args: str, **env: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        main, ["import-imdb", *args], env={"DATABASE_URL": url, "IMDB_DIR": str(imdb_dir), **env}
    )
    return result.exit_code, result.output


def test_acl_folder_gives_ids_labels_ratings_and_twice_is_the_same(tmp_path: Path, database: str) -> None:
    for name, text in ACL_FILES.items():
        (tmp_path / "data" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / name).write_text(text, encoding="utf-8")
    assert run(database, tmp_path / "data", "--split", "all")[0] == 0
    first = reviews(database)
    assert first == [
        ("test/neg/3_1", "imdb-test", 0, 1, "Awful \u0085 film"),
        ("test/pos/0_10", "imdb-test", 1, 10, "Wonderful.<br /><br />Caf\u00e9!"),
        ("test/pos/12_7", "imdb-test", 1, 7, "Good enough"),
        ("train/neg/5_4", "imdb-train", 0, 4, "Meh"),
    ]
    assert run(database, tmp_path / "data", "--split", "all")[0] == 0
    assert reviews(database) == first
    with session_factory(database)() as session:
        assert session.get_one(Dataset, "imdb-test").review_count == 3


@pytest.fixture
def served_archive(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(URL, sha256) of a small aclImdb archive served over HTTP on localhost."""
    folder = tmp_path / "www"
    folder.mkdir()
    digest = hashlib.sha256(build_archive(folder / "aclImdb_v1.tar.gz")).hexdigest()
    handler = partial(SimpleHTTPRequestHandler, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/aclImdb_v1.tar.gz", digest
    server.shutdown()
    server.server_close()


def test_download_when_no_data_is_found(
    tmp_path: Path, database: str, served_archive: tuple[str, str]
) -> None:
    url, digest = served_archive
    imdb_dir = tmp_path / "empty"
    code, output = run(database, imdb_dir, "--download", IMDB_ARCHIVE_URL=url, IMDB_ARCHIVE_SHA256=digest)
    assert code == 0, output
    assert "checksum ok" in output and "imdb-test: 3 reviews" in output
    assert [r[0] for r in reviews(database)] == ["test/neg/3_1", "test/pos/0_10", "test/pos/12_7"]
    assert not (imdb_dir / "aclImdb_v1.tar.gz").exists()  # the archive is removed once unpacked
    assert not (imdb_dir / "aclImdb" / "train" / "unsup").exists()  # only labelled reviews are unpacked


def test_download_with_a_wrong_checksum_fails_and_leaves_nothing(
    tmp_path: Path, database: str, served_archive: tuple[str, str]
) -> None:
    url, _ = served_archive
    imdb_dir = tmp_path / "empty"
    code, output = run(database, imdb_dir, "--download", IMDB_ARCHIVE_URL=url, IMDB_ARCHIVE_SHA256="0" * 64)
    assert code != 0 and "checksum mismatch" in output
    assert list(imdb_dir.iterdir()) == [] and reviews(database) == []


def test_no_data_asks_and_a_no_is_a_clear_error(tmp_path: Path, database: str) -> None:
    result = CliRunner().invoke(
        main,
        ["import-imdb"],
        input="n\n",
        env={"DATABASE_URL": database, "IMDB_DIR": str(tmp_path / "nothing")},
    )
    assert result.exit_code != 0
    assert "Download the Large Movie Review Dataset" in result.output
    assert "no IMDB test reviews" in result.output and "--download" in result.output
