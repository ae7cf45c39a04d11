"""A job's word rankings recomputed from its stored rows, the plain way: what the words page, its CSV and the
words API must show."""

from __future__ import annotations

from shared.store.models import Explanation


def expected_words(
    rows: list[Explanation], method: str, class_index: int, min_reviews: int
) -> list[tuple[str, float, int, int]]:
    """A view recomputed from the stored rows: (word, mean, occurrences, reviews), best first. Signed methods
    toward the class (a review explained for the other class negated), SA among the reviews predicted so."""
    sums: dict[int, float] = {}
    occurrences: dict[int, int] = {}
    reviews: dict[int, int] = {}
    names: dict[int, str] = {}
    for row in rows:
        if row.error is not None or row.token_ids is None or row.tokens is None:
            continue
        if method == "sa":
            if row.predicted_class != class_index:
                continue
            sign = 1.0
        else:
            sign = 1.0 if row.target_class == class_index else -1.0
        ids = [int(i) for i in row.token_ids][1:]
        texts, values = row.tokens.split("\n")[1:], getattr(row, method)[1:]
        for i, text, value in zip(ids, texts, values, strict=True):
            names.setdefault(i, "<unk>" if i == 2 else text)
            sums[i] = sums.get(i, 0.0) + sign * float(value)
            occurrences[i] = occurrences.get(i, 0) + 1
        for i in set(ids):
            reviews[i] = reviews.get(i, 0) + 1
    kept = [
        (names[i], sums[i] / occurrences[i], occurrences[i], reviews[i])
        for i in sums
        if reviews[i] >= min_reviews
    ]
    return sorted(kept, key=lambda w: (-w[1], w[0]))
