"""Property-based requests from the served OpenAPI document (schemathesis) against the
running daemon: no 5xx, every response as the document describes it, and no
schema-valid request refused.

`make test` runs a few examples per operation; `make fuzz-api` runs many more
(TAPEWORKER_FUZZ_EXAMPLES).
"""

from __future__ import annotations

import base64
import itertools
import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.core.result import Ok

from tests.integration.daemon import AUTH, Daemon

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("TAPEWORKER_FUZZ_EXAMPLES", "10"))
BASIC = "Basic " + base64.b64encode(f"{AUTH[0]}:{AUTH[1]}".encode()).decode()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    daemon = Daemon(folder=tmp_path_factory.mktemp("fuzz") / "daemon")
    daemon.start()
    yield daemon
    daemon.stop()


def test_every_operation_answers_as_documented(daemon: Daemon) -> None:
    schema = schemathesis.openapi.from_url(f"http://127.0.0.1:{daemon.http_port}/openapi.json")
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result.err()
        # The task_destinations resource; the operator and health routes are not the seed's.
        if result.ok().path.startswith("/api/v2/tasks/"):
            operations.append(result.ok())
    assert len(operations) == 6
    serial = itertools.count()
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
        def check(case: Any) -> None:
            # Every check, "no valid request refused" included: a body that contradicts
            # the library (a tape_id of another barcode), which no schema can describe,
            # is a 409 Conflict, which that check accepts as a refusal of valid data.
            headers = case.headers or {}
            if "Idempotency-Key" in headers:
                # A key reused with another request is refused (422) by design, and no
                # schema can say "unique": each generated key is made unique here; reuse
                # is tested in tests/worker/intake/http/test_idempotency.py.
                headers["Idempotency-Key"] = f"{headers['Idempotency-Key'][:240]}-{next(serial)}"
            case.call_and_validate(headers={"Authorization": BASIC})

        check()
