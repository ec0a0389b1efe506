"""Request size limits: refused before the body is read whole, counted, nothing journaled."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

from prometheus_client import REGISTRY

from tests.worker.intake.http.api_client import BASE, api_client, assert_error_shape

LIMIT = 64 * 1024


def refused(reason: str) -> float:
    value = REGISTRY.get_sample_value("tapeworker_http_refused_total", {"reason": reason})
    return value or 0.0


async def test_a_body_past_the_limit_is_a_413_and_reaches_nothing(tmp_path: Path) -> None:
    async with api_client(tmp_path, max_body_bytes=LIMIT) as (client, journal):
        before = refused("body_too_large")
        big = b'{"folder_path": "' + b"x" * LIMIT + b'"}'
        body = assert_error_shape(await client.post(BASE, content=big), 413)
        assert body["details"]["body"] == [{"error": "too_long", "value": str(len(big))}]
        assert refused("body_too_large") == before + 1
        assert await journal.events() == []
        small = await client.post(BASE, json={"folder_id": 1, "folder_path": "x" * 1000})
        assert small.status_code == 201, small.text


async def test_a_chunked_body_is_refused_once_it_passes_the_limit(tmp_path: Path) -> None:
    sent: list[int] = []

    async def endless() -> AsyncIterator[bytes]:
        # Far more than the limit, if anyone read it all.
        for _ in range(10_000):
            sent.append(1)
            yield b"x" * 4096

    async with api_client(tmp_path, max_body_bytes=LIMIT) as (client, journal):
        response = await client.post(BASE, content=endless())
        body = assert_error_shape(response, 413)
        assert body["details"]["body"][0]["error"] == "too_long"
        assert await journal.events() == []
    assert len(sent) < 10_000, "the body was not read whole"


async def test_a_query_past_its_limit_is_a_414(tmp_path: Path) -> None:
    async with api_client(tmp_path, max_query_bytes=256) as (client, _):
        response = await client.get(BASE, params={"id": "><" + "|".join(["1"] * 200)})
        body = assert_error_shape(response, 414)
        assert body["details"]["query"][0]["error"] == "too_long"
        assert (await client.get(BASE, params={"id": "1"})).status_code == 200
