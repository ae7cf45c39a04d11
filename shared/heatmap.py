"""The review as HTML: the original text with each token coloured by its relevance, safe to embed in a page.

Every piece of review text goes through markupsafe's escape; the only markup is what this module writes.
`<br />` tags of the reviews become line breaks, each token (with a visible span in the text) becomes one
`<span class="tok" data-r="value">`, coloured on a diverging scale centred on zero (red: for the target class,
blue: against it, white: zero), and text the model did not read (after the last token it read, when the review
was truncated) is greyed out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy.typing as npt
from markupsafe import Markup, escape

from shared.tokenizer import break_tag_spans

POSITIVE_RGB = (214, 39, 40)  # red
NEGATIVE_RGB = (31, 119, 180)  # blue
UNREAD_STYLE = "color:#999"


def colour(value: float, scale: float) -> str:
    """`#rrggbb` from white (0) to full red (+scale) or blue (-scale); values beyond the scale saturate."""
    if scale <= 0 or value != value:  # no scale, or NaN: white
        return "#ffffff"
    weight = min(abs(value) / scale, 1.0)
    target = POSITIVE_RGB if value > 0 else NEGATIVE_RGB
    r, g, b = (round(255 + (c - 255) * weight) for c in target)
    return f"#{r:02x}{g:02x}{b:02x}"


def _plain(text: str) -> Markup:
    """Escaped text with the review's `<br />` tags as real line breaks."""
    parts: list[str] = []
    position = 0
    for start, end in break_tag_spans(text):
        parts.append(escape(text[position:start]))
        parts.append("<br>")
        position = end
    parts.append(escape(text[position:]))
    return Markup("".join(parts))


def render_heatmap(
    text: str,
    spans: Sequence[tuple[int, int]],
    values: Sequence[float] | npt.NDArray[Any],
    truncated: bool = False,
    scale: float | None = None,
) -> Markup:
    """One HTML fragment for the review; `values[k]` belongs to `spans[k]` (empty spans, such as the start
    token's, are not shown). `scale` is the |value| shown at full colour, by default the review's largest."""
    if len(spans) != len(values):
        raise ValueError(f"{len(spans)} spans but {len(values)} values")
    shown = [(int(a), int(b), float(v)) for (a, b), v in zip(spans, values, strict=True) if b > a]
    if scale is None:
        scale = max((abs(v) for _, _, v in shown if v == v), default=0.0)
    parts: list[str] = []
    position = 0
    for start, end, value in shown:
        parts.append(_plain(text[position:start]))
        parts.append(
            f'<span class="tok" data-r="{value:.3g}" style="background:{colour(value, scale)}">'
            f"{escape(text[start:end])}</span>"
        )
        position = end
    rest = text[position:]
    if truncated and rest:
        parts.append(f'<span class="unread" style="{UNREAD_STYLE}">{_plain(rest)}</span>')
    else:
        parts.append(_plain(rest))
    return Markup("".join(parts))
