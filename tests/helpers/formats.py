"""The documented output line of `relevance explain --output` and of the JSONL export (README), field by
field in order: the tests of both check against this one list. The export adds the review's label."""

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
EXPORT_FIELDS = [*RECORD_FIELDS, "true_class"]
