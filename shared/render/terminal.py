"""The review in the terminal: each word on its shade of the one colour scale (`shared.render.colours`), as
24-bit ANSI background colours, `<br />` tags as line breaks, unread text dimmed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy.typing as npt

from shared.relevance.tokenizer import BREAK_TAG
from shared.render.colours import SHADE_RGB, shade_indices
from shared.render.heatmap import largest_magnitude, shown_tokens

RESET = "\x1b[0m"
DIM = "\x1b[2m"
BLACK_TEXT = "\x1b[38;2;0;0;0m"


def ansi_background(rgb: tuple[int, int, int]) -> str:
    return "\x1b[48;2;{};{};{}m".format(*rgb) + BLACK_TEXT


def render_terminal(
    text: str,
    spans: Sequence[tuple[int, int]] | npt.NDArray[Any],
    values: Sequence[float] | npt.NDArray[Any],
    *,
    truncated: bool = False,
    signed: bool = True,
) -> str:
    """The original text with each word the model read on its colour, on the review's own scale."""
    bounds, shown = shown_tokens(spans, values)
    shades = shade_indices(shown, largest_magnitude(shown), signed).tolist()
    pieces, cursor = [], 0
    for (start, end), shade in zip(bounds.tolist(), shades, strict=True):
        pieces += [text[cursor:start], ansi_background(SHADE_RGB[shade]), text[start:end], RESET]
        cursor = end
    rest = text[cursor:]
    pieces.append(f"{DIM}{rest}{RESET}" if truncated and rest else rest)
    return BREAK_TAG.sub("\n", "".join(pieces))
