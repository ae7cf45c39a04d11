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

import bisect
import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from markupsafe import Markup, escape

from shared.relevance.tokenizer import break_tag_spans

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


def _shade_names() -> list[str]:
    """Class names by index: `h0`, then SHADE_STEPS steps each of `hp` (red), `hn` (blue), `hs` (SA)."""
    return ["h0"] + [f"h{kind}{step}" for kind in "pns" for step in range(1, SHADE_STEPS + 1)]


SHADE_NAMES = _shade_names()


def _shade_indices(values: npt.NDArray[np.float64], scale: float, one_sided: bool) -> npt.NDArray[np.intp]:
    """Indices into SHADE_NAMES for many values at once (see shade_class)."""
    if scale <= 0 or scale != scale:
        return np.zeros(values.shape, dtype=np.intp)
    with np.errstate(invalid="ignore"):
        steps = np.clip(np.ceil(np.abs(values) / scale * SHADE_STEPS), 1, SHADE_STEPS)
    kind = np.full(values.shape, 2 if one_sided else 0, dtype=np.intp)
    if not one_sided:
        kind[values < 0] = 1
    index: npt.NDArray[np.intp] = kind * SHADE_STEPS + np.nan_to_num(steps).astype(np.intp)
    index[(values == 0) | np.isnan(values)] = 0
    return index


def shade_class(value: float, scale: float, one_sided: bool = False) -> str:
    """The stylesheet class of a value: `h0` (zero, white), `hp1`..`hp10` (red steps), `hn1`.. (blue),
    `hs1`.. (one-sided). Any non-zero value gets at least step 1, so its sign always shows."""
    return SHADE_NAMES[int(_shade_indices(np.array([value], dtype=np.float64), scale, one_sided)[0])]


def shade_stylesheet() -> str:
    """The CSS rules of every `shade_class`, with the colours `colour` gives at each step."""
    rules = [".h0{background:#ffffff}", f".unread{{{UNREAD_STYLE}}}"]
    for kind, sign, one_sided in (("p", 1, False), ("n", -1, False), ("s", 1, True)):
        for step in range(1, SHADE_STEPS + 1):
            rules.append(f".h{kind}{step}{{background:{colour(sign * step, SHADE_STEPS, one_sided)}}}")
    return "\n".join(rules) + "\n"


ESCAPE_GROWTH = {
    ord("&"): 5,
    ord("<"): 4,
    ord(">"): 4,
    ord('"'): 5,
    ord("'"): 5,
}  # &amp; &lt; &gt; &#34; &#39;


class _EscapedText:
    """The review escaped once by markupsafe, sliced by positions of the original text: escaping works
    character by character (`&<>"'` grow to 4-5 characters), so a slice of the escaped text between mapped
    offsets is exactly the escaped slice. One escape call per review instead of one per piece."""

    def __init__(self, text: str) -> None:
        self.escaped = str(escape(text))
        self.offsets: npt.NDArray[np.intp] | None = None  # None: nothing grew, offsets are the same
        if len(self.escaped) != len(text):
            codes = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
            sizes = np.ones(len(text) + 1, dtype=np.int64)
            sizes[0] = 0
            for code, size in ESCAPE_GROWTH.items():
                sizes[1:][codes == code] = size
            self.offsets = np.cumsum(sizes).astype(np.intp)
        self.breaks = break_tag_spans(text)
        self.break_starts = [a for a, _ in self.breaks]

    def slice(self, start: int, end: int) -> str:
        if self.offsets is None:
            return self.escaped[start:end]
        return self.escaped[int(self.offsets[start]) : int(self.offsets[end])]

    def pieces(self, starts: npt.NDArray[np.intp], ends: npt.NDArray[np.intp]) -> list[str]:
        """Escaped slices for many (start, end) pairs at once."""
        if self.offsets is not None:
            starts, ends = self.offsets[starts], self.offsets[ends]
        escaped = self.escaped
        return [escaped[a:b] for a, b in zip(starts.tolist(), ends.tolist(), strict=True)]

    def plain(self, start: int, end: int) -> str:
        """Escaped text of [start, end) with the review's `<br />` tags as real line breaks."""
        k = bisect.bisect_left(self.break_starts, start)
        if k == len(self.breaks) or self.breaks[k][0] >= end:  # most gaps between words: no tag
            return self.slice(start, end)
        parts = []
        while k < len(self.breaks) and self.breaks[k][1] <= end:
            tag_start, tag_end = self.breaks[k]
            parts += [self.slice(start, tag_start), "<br>"]
            start, k = tag_end, k + 1
        parts.append(self.slice(start, end))
        return "".join(parts)


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
    flat = itertools.chain.from_iterable(spans)  # much faster than np.asarray on a list of pairs
    bounds = np.fromiter(flat, dtype=np.intp, count=2 * len(spans)).reshape(-1, 2)  # (L, 2)
    keep = bounds[:, 1] > bounds[:, 0]
    bounds = bounds[keep]
    shown = np.asarray(values, dtype=np.float64)[keep]  # (tokens shown,)
    if scale is None:
        finite = np.abs(shown[np.isfinite(shown)])
        scale = float(finite.max()) if finite.size else 0.0
    doc = _EscapedText(text)
    labels = [f"{v:.3g}" for v in shown.tolist()]
    if classes:
        looks = [
            f'class="tok {SHADE_NAMES[i]}" data-r="{label}" title="{label}"'
            for i, label in zip(_shade_indices(shown, scale, one_sided).tolist(), labels, strict=True)
        ]
    else:
        looks = [
            f'class="tok" data-r="{label}" style="background:{colour(v, scale, one_sided)}"'
            for v, label in zip(shown.tolist(), labels, strict=True)
        ]
    starts, ends = bounds[:, 0], bounds[:, 1]
    gap_starts = np.concatenate([[0], ends[:-1]]).astype(np.intp)
    gaps, words = doc.pieces(gap_starts, starts), doc.pieces(starts, ends)
    breaks = np.asarray(doc.break_starts, dtype=np.intp)
    tagged = np.searchsorted(breaks, gap_starts) != np.searchsorted(breaks, starts)  # a tag inside the gap
    for k in np.flatnonzero(tagged).tolist():
        gaps[k] = doc.plain(int(gap_starts[k]), int(starts[k]))
    parts = [f"{gap}<span {look}>{word}</span>" for gap, look, word in zip(gaps, looks, words, strict=True)]
    position = int(ends[-1]) if len(ends) else 0
    if truncated and position < len(text):
        look = 'class="unread"' if classes else f'class="unread" style="{UNREAD_STYLE}"'
        parts.append(f"<span {look}>{doc.plain(position, len(text))}</span>")
    else:
        parts.append(doc.plain(position, len(text)))
    return Markup("".join(parts))
