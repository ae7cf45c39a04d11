"""The documented output line of `relevance explain --output` and of the JSONL export (README), field by
field in order: the tests of both check against this one list."""

RECORD_FIELDS = [
    "id",
    "tokens",
    "token_ids",
    "spans",
    "logits",
    "probabilities",
    "predicted_class",
    "target_class",
    "relevance",
    "lrp_rest",
    "truncated",
]
