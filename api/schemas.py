"""The API's contract, declared once: request bodies, query and path parameters and response bodies as
pydantic models. flask-openapi3 builds /api/openapi.json from them and validates requests with them; the web
pages parse their filters with the same models. Every limit is a schema constraint, it shows in the spec."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from shared.jobs.browse import ExplanationFilter, Sort, normalise_word
from shared.jobs.lifecycle import DEFAULT_EVERY, PREDICTED
from shared.jobs.word_stats import WEAK_REVIEWS
from shared.relevance.faithfulness import RANKINGS
from shared.relevance.methods import METHODS

MAX_REQUEST_BYTES = 64 * 1024 * 1024  # a request body (Flask's MAX_CONTENT_LENGTH): larger gives 413
MAX_TEXTS = 10_000  # texts in one job (MAX_TEXTS may lower it)
MAX_TEXT_CHARS = (
    100_000  # characters of one text (MAX_TEXT_CHARS may lower it); the longest IMDB review: 13,704
)
MAX_DB_INT = 2**31 - 1  # the databases' INTEGER: ids and counts beyond it cannot exist
MAX_CLASS = 1_000  # a class index (the model says how many classes there are)
MAX_PAGE = 1_000_000  # times per_page, far inside the databases' OFFSET range
MAX_PER_PAGE = 200
MAX_JOBS_LISTED = 1_000
MAX_WORDS = 1_000  # words per view of a job's word statistics
MAX_ID_CHARS = 64  # reviews.id and datasets.name are VARCHAR(64)
NO_NUL = r"^[^\x00]*$"  # PostgreSQL text cannot hold NUL characters
# A page's job id: beyond the databases' integer there is no such job (404); the API says 422 (JobPath).
JOB_ID_RULE = f"<int(min=1, max={MAX_DB_INT}):job_id>"


def _known_method(name: str) -> str:
    if name not in METHODS:
        raise ValueError(f"must be one of {list(METHODS)}")
    return name


def _present(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty or blank")
    return text


Text = Annotated[str, Field(max_length=MAX_TEXT_CHARS, pattern=NO_NUL), AfterValidator(_present)]
Method = Annotated[str, Field(json_schema_extra={"enum": list(METHODS)}), AfterValidator(_known_method)]
ClassIndex = Annotated[int, Field(ge=0, le=MAX_CLASS)]
Target = Annotated[
    ClassIndex | Annotated[str, Field(pattern=rf"^({PREDICTED}|[0-9]{{1,4}})$")],
    Field(description=f'"{PREDICTED}" (the predicted class) or a class index, as a number or a string'),
]


class Strict(BaseModel):
    """A JSON body: unknown fields are refused (a misspelt option must not be ignored silently) and types are
    JSON's own (true is no number, "10" no integer)."""

    model_config = ConfigDict(extra="forbid", strict=True)


def _absent_not_null(schema: dict[str, Any]) -> None:
    """A query parameter is absent or has a value; a query string cannot say null."""
    for name, field in schema.get("properties", {}).items():
        choices = [c for c in field.get("anyOf", []) if c != {"type": "null"}]
        if len(choices) == 1:
            field.pop("anyOf")
            schema["properties"][name] = choices[0] | field


class Query(BaseModel):
    model_config = ConfigDict(json_schema_extra=_absent_not_null)


class JobRequest(Strict):
    """A job: exactly one of a dataset (optionally its first `limit` reviews) and a list of texts."""

    dataset: str | None = Field(None, min_length=1, max_length=MAX_ID_CHARS, pattern=NO_NUL)
    texts: list[Text] | None = Field(None, min_length=1, max_length=MAX_TEXTS)
    limit: int | None = Field(None, ge=1, le=MAX_DB_INT, description="the dataset's first N reviews (by id)")
    methods: list[Method] = Field(list(METHODS), min_length=1, max_length=len(METHODS))
    target: Target = PREDICTED
    faithfulness: bool | None = Field(
        None, description="run the deletion test with the job (default: on for a dataset, off for texts)"
    )
    faithfulness_every: int | None = Field(
        None,
        ge=1,
        le=MAX_DB_INT,
        description=f"test every n-th review, chosen by a hash of its id (default: {DEFAULT_EVERY} for a "
        "dataset, 1 for texts; 1 = every review)",
    )

    @model_validator(mode="after")
    def _one_source(self) -> JobRequest:
        if (self.dataset is None) == (self.texts is None):
            raise ValueError('give exactly one of "dataset" and "texts"')
        if len(set(self.methods)) != len(self.methods):
            raise ValueError("methods must be distinct")
        return self


class ExplainRequest(Strict):
    """One review explained now (on the interactive queue)."""

    text: Text
    target: Target = PREDICTED


class JobsQuery(Query):
    limit: int = Field(50, ge=1, le=MAX_JOBS_LISTED, description="the newest N jobs")


class JobPath(BaseModel):
    job_id: int = Field(ge=1, le=MAX_DB_INT)


class ExplanationPath(JobPath):
    review_id: str = Field(min_length=1, max_length=MAX_ID_CHARS, pattern=NO_NUL)


class ExportQuery(Query):
    format: Literal["jsonl", "csv"] = "jsonl"


class ListingQuery(Query):
    """The filters and sort of a job's explanations: the API's listing and the job and review pages (which
    carry other parameters too, so unknown ones are ignored here)."""

    true_class: ClassIndex | None = None
    predicted_class: ClassIndex | None = None
    correct: bool | None = Field(None, description="predicted class == true class")
    word: str | None = Field(
        None,
        max_length=MAX_ID_CHARS,
        pattern=NO_NUL,
        description="reviews containing this word (one token, any case)",
    )
    min_confidence: float | None = Field(None, ge=0, le=1, description="probability of the predicted class")
    max_confidence: float | None = Field(None, ge=0, le=1)
    sort: Sort = Sort.ID

    @model_validator(mode="before")
    @classmethod
    def _blank_is_absent(cls, data: Any) -> Any:
        """A form field left empty (`?word=&sort=`) means no filter."""
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if not (isinstance(v, str) and not v.strip())}
        return data

    @model_validator(mode="after")
    def _word_sort_needs_a_word(self) -> ListingQuery:
        if self.word is not None:
            self.word = normalise_word(self.word.strip())
        if self.sort in (Sort.WORD, Sort.WORD_DESC) and self.word is None:
            raise ValueError("sorting by a word's relevance needs a word")
        return self

    def filter(self) -> ExplanationFilter:
        return ExplanationFilter(
            true_class=self.true_class,
            predicted_class=self.predicted_class,
            correct=self.correct,
            word=self.word,
            min_confidence=self.min_confidence,
            max_confidence=self.max_confidence,
        )


class WordsQuery(Query):
    min_reviews: int | None = Field(
        None,
        ge=1,
        le=MAX_DB_INT,
        description="only words seen in at least this many of a view's reviews (default: 20 in a job of "
        "1,000 reviews or more, else 2)",
    )
    limit: int = Field(20, ge=1, le=MAX_WORDS, description="words per view, best first")


class PageQuery(Query):
    page: int = Field(1, ge=1, le=MAX_PAGE)


class ExplanationsQuery(ListingQuery, PageQuery):
    per_page: int = Field(50, ge=1, le=MAX_PER_PAGE)


# --- responses --------------------------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    code: str = Field(description="short and machine-readable, e.g. job_not_found")
    message: str


class ErrorBody(BaseModel):
    """Every error: 400 malformed (not JSON, not an object, too deep), 401 no or a wrong token, 404, 409, 413,
    415 without `Content-Type: application/json`, 422 well-formed but invalid, 429 too many writes."""

    error: ErrorDetail


class Seconds(BaseModel):
    """Worker time by phase, summed over batches."""

    engine: float
    render: float
    write: float
    faithfulness: float = Field(description="the deletion test and the methods' agreement")


class JobOut(BaseModel):
    id: int
    kind: Literal["dataset", "texts"]
    dataset: str | None
    limit: int | None
    target: str
    methods: list[str]
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    total: int
    done: int
    failed: int
    percent: float
    reviews_per_second: float | None
    eta_seconds: float | None
    elapsed_seconds: float | None
    accuracy: float | None
    error: str | None
    model_checksum: str
    created_at: str
    started_at: str | None
    finished_at: str | None
    seconds: Seconds
    url: str


class JobList(BaseModel):
    jobs: list[JobOut]


class DatasetOut(BaseModel):
    name: str
    split: str
    reviews: int


class DatasetList(BaseModel):
    datasets: list[DatasetOut]


class ExplanationItem(BaseModel):
    review_id: str
    true_class: int | None
    predicted_class: int | None
    confidence: float | None
    truncated: bool | None
    error: str | None
    word_relevance: float | None = Field(description="the searched word's summed LRP in the review")
    url: str


class ExplanationPage(BaseModel):
    total: int
    page: int
    per_page: int
    items: list[ExplanationItem]


class Record(BaseModel):
    """An explained review in the `relevance explain --output` format (a failed one: its id and error)."""

    id: str | None
    tokens: list[str] | None = None
    token_ids: list[int] | None = None
    spans: list[list[int]] | None = None
    logits: list[float] | None = None
    probabilities: list[float] | None = None
    predicted_class: int | None = None
    target_class: int | None = None
    relevance: dict[str, list[float]] | None = None
    lrp_rest: float | None = None
    truncated: bool | None = None
    error: str | None = None


class PairFigures(BaseModel):
    """One review's agreement of two methods; null where undefined (too few words, a constant ranking)."""

    methods: list[Method]
    spearman: float | None = Field(description="Spearman's rho of the two rankings of the review's words")
    top5_overlap: float | None = Field(description="share of the top-5 words both put first")


class ExplanationDetail(Record):
    true_class: int | None
    text: str
    heatmap_html: str | None
    agreement: list[PairFigures] | None = Field(description="per pair of methods; null for a failed review")


class WordOut(BaseModel):
    word: str
    mean: float = Field(description="mean relevance per occurrence, within the view")
    occurrences: int
    reviews: int = Field(description="the view's reviews containing the word")
    weak: bool = Field(description=f"seen in fewer than {WEAK_REVIEWS} of the view's reviews: weak evidence")


class WordView(BaseModel):
    """One ranking: a signed method's words toward a class, or an unsigned one's most sensitive words among
    the reviews predicted as that class."""

    method: Method
    direction: Literal["toward", "predicted"]
    class_index: int
    class_name: str
    title: str
    reviews: int = Field(description="the reviews the means are over")
    words: list[WordOut]


class WordsOut(BaseModel):
    """A finished job's words, oriented to fixed classes (`orientation` says how, in one line)."""

    job_id: int
    review_count: int
    min_reviews: int
    orientation: str
    views: list[WordView]


Ranking = Annotated[str, Field(json_schema_extra={"enum": list(RANKINGS)})]


class Estimate(BaseModel):
    """A mean over reviews with its 95 % confidence interval (null with too few reviews)."""

    mean: float | None
    low: float | None
    high: float | None
    reviews: int


class Curve(BaseModel):
    """One ranking's deletion, per k = 0..K words deleted (null where no review counts)."""

    ranking: Ranking
    direction: Literal["most", "least"] = Field(description="most (or least) relevant words deleted first")
    accuracy_correct: list[float | None] = Field(description="accuracy of the correctly classified reviews")
    accuracy_misclassified: list[float | None] = Field(description="accuracy of the misclassified reviews")
    flip_rate: list[float | None] = Field(description="share of all tested reviews whose prediction changed")


class Aopc(BaseModel):
    ranking: Ranking
    comprehensiveness: Estimate = Field(description="AOPC, most relevant first: higher is more faithful")
    sufficiency: Estimate = Field(description="AOPC, least relevant first: lower is more faithful")


class Distribution(Estimate):
    quartiles: list[float | None]
    histogram: list[int]


class PairAgreement(BaseModel):
    methods: list[Method]
    spearman: Distribution = Field(description="histogram over spearman_edges")
    top5_overlap: Distribution = Field(description="histogram of 0..top_words shared words")


class AgreementOut(BaseModel):
    reviews: int
    top_words: int
    spearman_edges: list[float]
    pairs: list[PairAgreement]


class FaithfulnessSeconds(BaseModel):
    engine: float
    faithfulness: float
    ratio: float | None = Field(description="faithfulness over engine seconds: the test's cost")


class FaithfulnessOut(BaseModel):
    """The deletion test (Arras et al. 2017) and the methods' agreement over the job's reviews so far."""

    job_id: int
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    enabled: bool
    every: int = Field(description="every n-th review is tested (by a hash of its id)")
    rankings: list[Ranking]
    max_deleted: int
    reviews: int = Field(description="reviews tested")
    correct: int
    misclassified: int
    curves: list[Curve]
    aopc: list[Aopc]
    agreement: AgreementOut
    seconds: FaithfulnessSeconds


class ExplainResult(Record):
    heatmap_html: str
