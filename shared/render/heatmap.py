"""The review as HTML: the original text with each token coloured by its relevance, safe to embed in a page.

The one heatmap pipeline: the stored heatmap of a batch, the API's answer and the pages all come from
`render_heatmap`. Every piece of review text goes through markupsafe's escape; the only markup is what this
module writes. `<br />` tags of the reviews become line breaks, each token with a visible span in the text
becomes one `<span class="tok <shade>" data-r="value" title="value">` (shades from `shared.render.colours`,
defined by its stylesheet), and text the model did not read (after the last token it read, when the review
was truncated) is greyed out.
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
from shared.render.colours import SHADE_NAMES, shade_indices

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
            codes = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")  # (n,)
            sizes = np.ones(len(text) + 1, dtype=np.int64)  # (n + 1,)
            sizes[0] = 0
            for code, size in ESCAPE_GROWTH.items():
                sizes[1:][codes == code] = size
            self.offsets = np.cumsum(sizes).astype(np.intp)  # (n + 1,)
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


def shown_tokens(
    spans: Sequence[tuple[int, int]] | npt.NDArray[Any], values: Sequence[float] | npt.NDArray[Any]
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]:
    """The (start, end) bounds and values of the tokens with visible text (not the start token)."""
    if len(spans) != len(values):
        raise ValueError(f"{len(spans)} spans but {len(values)} values")
    if isinstance(spans, np.ndarray):
        bounds = spans.reshape(-1, 2).astype(np.intp)  # (L, 2)
    else:
        flat = itertools.chain.from_iterable(spans)  # much faster than np.asarray on a list of pairs
        bounds = np.fromiter(flat, dtype=np.intp, count=2 * len(spans)).reshape(-1, 2)  # (L, 2)
    keep = bounds[:, 1] > bounds[:, 0]  # (L,)
    return bounds[keep], np.asarray(values, dtype=np.float64)[keep]


def largest_magnitude(values: npt.NDArray[np.floating]) -> float:
    """The review's own scale: its largest finite |value| (0 when there is none)."""
    finite = np.abs(values[np.isfinite(values)])  # (L,)
    return float(finite.max()) if finite.size else 0.0


def render_heatmap(
    text: str,
    spans: Sequence[tuple[int, int]] | npt.NDArray[Any],
    values: Sequence[float] | npt.NDArray[Any],
    *,
    truncated: bool = False,
    scale: float | None = None,
    signed: bool = True,
) -> Markup:
    """One HTML fragment for the review; `values[k]` belongs to `spans[k]` (empty spans, such as the start
    token's, are not shown). `scale` is the |value| shown at full colour, by default the review's largest;
    `signed=False` for methods without a sign (one-sided purple scale)."""
    bounds, shown = shown_tokens(spans, values)
    if scale is None:
        scale = largest_magnitude(shown)
    doc = _EscapedText(text)
    labels = [f"{v:.3g}" for v in shown.tolist()]
    looks = [
        f'class="tok {SHADE_NAMES[i]}" data-r="{label}" title="{label}"'
        for i, label in zip(shade_indices(shown, scale, signed).tolist(), labels, strict=True)
    ]
    starts, ends = bounds[:, 0], bounds[:, 1]
    gap_starts = np.concatenate([[0], ends[:-1]])[: len(starts)].astype(np.intp)  # (L,); none for no word
    gaps, words = doc.pieces(gap_starts, starts), doc.pieces(starts, ends)
    breaks = np.asarray(doc.break_starts, dtype=np.intp)  # (tags,)
    tagged = np.searchsorted(breaks, gap_starts) != np.searchsorted(breaks, starts)  # (L,) a tag in the gap
    for k in np.flatnonzero(tagged).tolist():
        gaps[k] = doc.plain(int(gap_starts[k]), int(starts[k]))
    parts = [f"{gap}<span {look}>{word}</span>" for gap, look, word in zip(gaps, looks, words, strict=True)]
    position = int(ends[-1]) if len(ends) else 0
    if truncated and position < len(text):
        parts.append(f'<span class="unread">{doc.plain(position, len(text))}</span>')
    else:
        parts.append(doc.plain(position, len(text)))
    return Markup("".join(parts))
