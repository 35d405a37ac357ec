"""Schemathesis against the gateway's own OpenAPI document, on SQLite and on PostgreSQL.

Every operation gets bounded generated requests, schema-valid and schema-invalid; each answer must not be a
5xx, must be a status the document lists, and must match the documented schema. The one check
left out is `positive_data_acceptance`: a schema-valid create can still be refused for reasons
no schema states (an image URL that does not resolve, an id that does not exist).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.conftest import make_settings
from tests.support.postgres import temporary_database
from tests.support.servers import serve_in_thread

EXAMPLES = 5  # per operation and mode; docs/reliability.md has a longer run


def fuzz(url: str, examples: int = EXAMPLES) -> tuple[Counter[str], Counter[str]]:
    schema = schemathesis.openapi.from_url(f"{url}/docs/openapi.json")
    ran: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    for result in schema.get_all_operations():
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):  # valid data, then invalid
            try:
                _runner(result.ok(), mode, url, examples, ran, failed)()
            except Unsatisfiable:  # nothing of this operation can be made invalid (no inputs)
                continue
    return ran, failed


def _runner(op: Any, mode: GenerationMode, url: str, examples: int, ran: Counter[str], failed: Counter[str]) -> Any:
    @given(case=op.as_strategy(generation_mode=mode))
    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(case: Any) -> None:
        ran[op.label] += 1
        try:
            case.call_and_validate(base_url=url, excluded_checks=[positive_data_acceptance], timeout=30)
        except BaseException as exc:  # a failure group: record each and keep going
            for sub in getattr(exc, "exceptions", [exc]):
                failed[f"{op.label}: {type(sub).__name__}: {str(sub).splitlines()[0]}"] += 1

    return run


def _gateway(tmp_path: Path, toy_url: str, **overrides: Any) -> Any:
    from gateway.api.app import create_app

    return serve_in_thread(create_app(make_settings(tmp_path, toy_url, **overrides)))


@pytest.mark.slow
def test_no_5xx_and_every_answer_documented_on_sqlite(tmp_path: Path, toy_url: str) -> None:
    with _gateway(tmp_path, toy_url) as url:
        ran, failed = fuzz(url)
    assert len(ran) >= 18 and sum(ran.values()) >= 120
    assert not failed, "\n".join(f"{n}x {f}" for f, n in failed.most_common())


@pytest.mark.slow
@pytest.mark.postgres
def test_no_5xx_and_every_answer_documented_on_postgresql(tmp_path: Path, toy_url: str) -> None:
    with temporary_database() as db, _gateway(tmp_path, toy_url, database_url=db) as url:
        ran, failed = fuzz(url)
    assert len(ran) >= 18 and sum(ran.values()) >= 120
    assert not failed, "\n".join(f"{n}x {f}" for f, n in failed.most_common())
