"""`relevance bench`: the engine benchmark (figures, not a test)."""

from __future__ import annotations

import click

from shared.settings import Settings


@click.command()
@click.option("--reviews", default=2000, show_default=True, help="Reviews cut to 200 tokens for the rate.")
@click.option("--loop-reviews", default=20, show_default=True, help="Reviews for the plain-loop baseline.")
@click.option("--quick", is_flag=True, help="Skip the 25,000-review and end-to-end runs.")
def bench(reviews: int, loop_reviews: int, quick: bool) -> None:
    """Engine speed against the plain per-review loop, 25k time, memory, float32 precision."""
    from shared.bench import run  # threadpoolctl and the data are only needed here

    run(Settings.from_env(), reviews_at_200=reviews, loop_reviews=loop_reviews, full=not quick)
