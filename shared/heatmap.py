"""The review as HTML: the original text with each token coloured by its relevance, safe to embed in a page.

Every piece of review text goes through markupsafe's escape; the only markup is what this module writes.
`<br />` tags of the reviews become line breaks, each token (with a visible span in the text) becomes one
`<span class="tok" data-r="value">`, coloured on a diverging scale centred on zero (red: for the target class,
blue: against it, white: zero), and text the model did not read (after the last token it read, when the review
was truncated) is greyed out. Pages under a strict Content-Security-Policy (no inline styles) ask for
stylesheet classes instead: `shade_class` picks one of SHADE_STEPS steps per colour, `shade_stylesheet`
defines them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy.typing as npt
from markupsafe import Markup, escape

from shared.tokenizer import break_tag_spans

POSITIVE_RGB = (214, 39, 40)  # red
NEGATIVE_RGB = (31, 119, 180)  # blue
ONE_SIDED_RGB = (106, 61, 154)  # purple: methods without a sign (SA)
UNREAD_STYLE = "color:#999"
SHADE_STEPS = 10


def colour(value: float, scale: float, one_sided: bool = False) -> str:
    """`#rrggbb` from white (0) to full red (+scale) or blue (-scale), or to purple for a one-sided method;
    values beyond the scale saturate."""
    if scale <= 0 or value != value:  # no scale, or NaN: white
        return "#ffffff"
    weight = min(abs(value) / scale, 1.0)
    target = ONE_SIDED_RGB if one_sided else POSITIVE_RGB if value > 0 else NEGATIVE_RGB
    r, g, b = (round(255 + (c - 255) * weight) for c in target)
    return f"#{r:02x}{g:02x}{b:02x}"


def shade_class(value: float, scale: float, one_sided: bool = False) -> str:
    """The stylesheet class of a value: `h0` (zero, white), `hp1`..`hp10` (red steps), `hn1`.. (blue),
    `hs1`.. (one-sided). Any non-zero value gets at least step 1, so its sign always shows."""
    if scale <= 0 or value != value or value == 0:
        return "h0"
    step = min(SHADE_STEPS, math.ceil(abs(value) / scale * SHADE_STEPS))
    kind = "s" if one_sided else "p" if value > 0 else "n"
    return f"h{kind}{step}"


def shade_stylesheet() -> str:
    """The CSS rules of every `shade_class`, with the colours `colour` gives at each step."""
    rules = [".h0{background:#ffffff}", f".unread{{{UNREAD_STYLE}}}"]
    for kind, sign, one_sided in (("p", 1, False), ("n", -1, False), ("s", 1, True)):
        for step in range(1, SHADE_STEPS + 1):
            rules.append(f".h{kind}{step}{{background:{colour(sign * step, SHADE_STEPS, one_sided)}}}")
    return "\n".join(rules) + "\n"


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
    one_sided: bool = False,
    classes: bool = False,
) -> Markup:
    """One HTML fragment for the review; `values[k]` belongs to `spans[k]` (empty spans, such as the start
    token's, are not shown). `scale` is the |value| shown at full colour, by default the review's largest.
    `classes` writes `shade_class` classes and a hover title instead of inline styles."""
    if len(spans) != len(values):
        raise ValueError(f"{len(spans)} spans but {len(values)} values")
    shown = [(int(a), int(b), float(v)) for (a, b), v in zip(spans, values, strict=True) if b > a]
    if scale is None:
        scale = max((abs(v) for _, _, v in shown if v == v), default=0.0)
    parts: list[str] = []
    position = 0
    for start, end, value in shown:
        parts.append(_plain(text[position:start]))
        shown_value = f"{value:.3g}"
        if classes:
            shade = shade_class(value, scale, one_sided)
            look = f'class="tok {shade}" data-r="{shown_value}" title="{shown_value}"'
        else:
            look = f'class="tok" data-r="{shown_value}" style="background:{colour(value, scale, one_sided)}"'
        parts.append(f"<span {look}>{escape(text[start:end])}</span>")
        position = end
    rest = text[position:]
    if truncated and rest:
        look = 'class="unread"' if classes else f'class="unread" style="{UNREAD_STYLE}"'
        parts.append(f"<span {look}>{_plain(rest)}</span>")
    else:
        parts.append(_plain(rest))
    return Markup("".join(parts))
