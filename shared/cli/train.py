"""`relevance train`."""

from __future__ import annotations

import click


@click.command()
def train() -> None:
    """Not built yet."""
    raise click.ClickException("not built yet")
