"""`relevance import-imdb`: load the IMDB reviews from IMDB_DIR into the database, or download them.

The database code (SQLAlchemy, Alembic) is imported when the command runs, not when the command line starts:
`relevance --help` and `relevance explain` never load it.
"""

from __future__ import annotations

import click
from tqdm import tqdm

from shared.settings import Settings
from shared.store.imdb import SPLITS


def _download(settings: Settings) -> None:
    """Fetch and unpack the official archive into IMDB_DIR, with a progress bar."""
    from shared.store.datasets import ARCHIVE_NAME, download_archive, extract_archive

    target = settings.imdb_dir / ARCHIVE_NAME
    with tqdm(unit="B", unit_scale=True, desc=ARCHIVE_NAME) as bar:

        def progress(count: int, total: int | None) -> None:
            bar.total = total
            bar.update(count)

        download_archive(settings.imdb_archive_url, settings.imdb_archive_sha256, target, progress)
    click.echo(f"checksum ok; unpacking into {settings.imdb_dir}")
    extract_archive(target, settings.imdb_dir)
    target.unlink()


@click.command("import-imdb")
@click.option("--split", "splits", type=click.Choice([*SPLITS, "all"]), default="test", show_default=True)
@click.option(
    "--download/--no-download",
    default=None,
    help="When IMDB_DIR holds no reviews, download the official archive (default: ask).",
)
def import_imdb(splits: str, download: bool | None) -> None:
    """Load the IMDB reviews (id, label, rating, text) from IMDB_DIR into the database; safe to run again."""
    from shared.store.datasets import (
        DataNotFoundError,
        DownloadError,
        dataset_name,
        find_split,
        import_reviews,
    )
    from shared.store.db import session_factory

    settings = Settings.from_env()
    wanted = SPLITS if splits == "all" else (splits,)
    Session = session_factory(settings.effective_database_url)
    for split in wanted:
        try:
            source, reviews = find_split(settings.imdb_dir, split)
        except DataNotFoundError as exc:
            click.echo(str(exc), err=True)
            if download is None:
                download = click.confirm(
                    f"Download the Large Movie Review Dataset (~80 MB) from {settings.imdb_archive_url}?"
                )
            if not download:
                raise click.ClickException("no data to import; set IMDB_DIR or use --download") from exc
            try:
                _download(settings)
            except DownloadError as error:
                raise click.ClickException(str(error)) from error
            source, reviews = find_split(settings.imdb_dir, split)
        with Session() as session:
            count = import_reviews(session, split, source, reviews)
        click.echo(f"{dataset_name(split)}: {count} reviews from {source}")
