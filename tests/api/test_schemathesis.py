"""Schemathesis against the generated spec, through the WSGI app: a bounded, derandomized run (fixed seed) of
schema-conforming (positive) and schema-violating (negative) requests to every operation, checking that no
answer is a 5xx and that every status, content type and body is the one the spec declares."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.schemas import BaseSchema
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.helpers.service import migrated_sqlite, start_service, stop_service

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES = 80  # per operation and mode: about 2 minutes in all on this 2-core machine


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, assets: tuple[Path, Path]) -> Iterator[Flask]:
    """The API and a real worker on a database with the fixture dataset and one finished job (so that some
    generated ids exist, with rows); no rate limit: the run makes hundreds of writes."""
    folder = tmp_path_factory.mktemp("schemathesis")
    configured = replace(migrated_sqlite(folder, assets, batch_size=7), write_rate_limit="")
    service = start_service("schemathesis", configured, folder)
    created = service.client.post("/api/jobs", json={"dataset": "imdb-test", "limit": 5})
    assert created.status_code == 202
    service.wait_for_job(created.get_json()["id"])
    yield service.app
    stop_service(service)


@pytest.fixture(scope="module")
def schema(app: Flask) -> BaseSchema:
    return schemathesis.openapi.from_wsgi("/api/openapi.json", app)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_operation_keeps_to_the_spec(schema: BaseSchema, mode: GenerationMode) -> None:
    failures = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 12
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            derandomize=True,  # the fixed seed: the same requests every run
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
        def conforms(case: schemathesis.Case) -> None:
            case.call_and_validate(checks=CHECKS)

        try:
            conforms()
        except Unsatisfiable:  # nothing to get wrong: an operation without parameters or body
            assert mode == GenerationMode.NEGATIVE and not operation.path_parameters and not operation.query
        except Exception as failure:  # every operation runs; the failures are listed together
            failures.append(f"{operation.label}: {failure}")
    assert not failures, "\n\n".join(failures)
