"""Importing the IMDB reviews into the database, from this project's JSONL files or the aclImdb folder.

`IMDB_DIR` may hold `test.jsonl.gz`/`train.jsonl.gz` (see ../shared/imdb/README.md), or the Large Movie
Review Dataset as published: `aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt` (or those folders directly).
When neither is there, the official archive can be downloaded (sha256 checked) and unpacked into `IMDB_DIR`.
"""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import requests
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.store.db import chunked, insert_for
from shared.store.imdb import SPLITS, Review, read_split, split_path
from shared.store.models import Dataset, utcnow
from shared.store.models import Review as ReviewRow

LABELS = {"neg": 0, "pos": 1}
ACL_FOLDER = "aclImdb"
ARCHIVE_NAME = "aclImdb_v1.tar.gz"
INSERT_CHUNK = 1000


class DataNotFoundError(FileNotFoundError):
    """IMDB_DIR holds neither the JSONL files nor an aclImdb folder for the split."""


class DownloadError(RuntimeError):
    """The archive could not be fetched, or its checksum is wrong."""


def dataset_name(split: str) -> str:
    return f"imdb-{split}"


def acl_root(imdb_dir: Path) -> Path | None:
    """The folder that holds `train/` and `test/` of the official layout, if any."""
    for root in (imdb_dir / ACL_FOLDER, imdb_dir):
        if any((root / split / label).is_dir() for split in SPLITS for label in LABELS):
            return root
    return None


def read_acl_split(root: Path, split: str) -> Iterator[Review]:
    """Reviews of one split of the official folder, ids and ratings from `<id>_<rating>.txt`, sorted by id
    as a string (the JSONL files' order)."""
    files = sorted(
        (f"{split}/{label}/{path.stem}", path, value)
        for label, value in LABELS.items()
        for path in (root / split / label).glob("*.txt")
    )
    for review_id, path, label in files:
        rating = int(path.stem.rsplit("_", 1)[1])
        yield Review(id=review_id, text=path.read_bytes().decode("utf-8"), label=label, rating=rating)


def find_split(imdb_dir: Path, split: str) -> tuple[str, Iterator[Review]]:
    """Where the split is (for the record) and its reviews; DataNotFoundError when IMDB_DIR lacks it."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    jsonl = split_path(imdb_dir, split)
    if jsonl.is_file():
        return str(jsonl), read_split(imdb_dir, split)
    root = acl_root(imdb_dir)
    if root is not None and (root / split).is_dir():
        return str(root / split), read_acl_split(root, split)
    raise DataNotFoundError(
        f"no IMDB {split} reviews in {imdb_dir} (neither {jsonl.name} nor {ACL_FOLDER}/{split}/)"
    )


def import_reviews(session: Session, split: str, source: str, reviews: Iterable[Review]) -> int:
    """Insert or refresh the reviews of one split as its dataset (`imdb-<split>`); idempotent; returns the
    count."""
    name = dataset_name(split)
    insert = insert_for(session)
    session.merge(Dataset(name=name, split=split, source=source, review_count=0, imported_at=utcnow()))
    session.flush()
    for chunk in chunked(reviews, INSERT_CHUNK):
        rows = [
            {"id": r.id, "dataset": name, "label": r.label, "rating": r.rating, "text": r.text} for r in chunk
        ]
        statement = insert(ReviewRow).values(rows)
        excluded = statement.excluded
        session.execute(
            statement.on_conflict_do_update(
                index_elements=[ReviewRow.id],
                set_={
                    "dataset": excluded.dataset,
                    "label": excluded.label,
                    "rating": excluded.rating,
                    "text": excluded.text,
                },
            )
        )
    count = session.scalar(select(func.count()).select_from(ReviewRow).where(ReviewRow.dataset == name)) or 0
    dataset = session.get_one(Dataset, name)
    dataset.review_count = count
    session.commit()
    return count


def download_archive(
    url: str, sha256: str, target: Path, progress: Callable[[int, int | None], None]
) -> Path:
    """Fetch the archive to `target` (via a temporary file), calling progress(bytes, total) as it comes;
    a wrong checksum removes the file and raises DownloadError."""
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    try:
        with requests.get(url, stream=True, timeout=30) as response:
            response.raise_for_status()
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            with tempfile.NamedTemporaryFile(dir=target.parent, delete=False, suffix=".part") as part:
                for block in response.iter_content(chunk_size=1 << 20):
                    part.write(block)
                    digest.update(block)
                    progress(len(block), total)
    except requests.RequestException as exc:
        raise DownloadError(f"cannot download {url}: {exc}") from exc
    partial = Path(part.name)
    if digest.hexdigest() != sha256:
        partial.unlink()
        raise DownloadError(f"checksum mismatch for {url}: got {digest.hexdigest()}, expected {sha256}")
    shutil.move(partial, target)
    return target


def extract_archive(archive: Path, imdb_dir: Path) -> Path:
    """Unpack the labelled reviews of the archive (regular files only, inside IMDB_DIR); returns the root."""
    with tarfile.open(archive, "r:gz") as tar:
        members = [
            m
            for m in tar.getmembers()
            if m.isfile()
            and len(Path(m.name).parts) == 4
            and Path(m.name).parts[1] in SPLITS
            and Path(m.name).parts[2] in LABELS
        ]
        tar.extractall(imdb_dir, members=members, filter="data")
    root = acl_root(imdb_dir)
    if root is None:
        raise DownloadError(f"{archive} does not hold an {ACL_FOLDER}/<split>/<pos|neg>/ folder")
    return root
