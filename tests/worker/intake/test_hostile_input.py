"""Hostile input through both intakes, property-based.

Whatever arrives on MQTT or HTTP, the daemon never raises, journals every input
(a rejected one with its reason), creates no destination or request from a rejected
input, and lets no barcode that is not a plain volume tag into the requests table,
from where it would reach an `mtx` command line.

Every example gets a fresh journal in its own temporary folder and runs its own
event loop: a pytest fixture would be shared across hypothesis examples.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import tempfile
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiomqtt
import httpx
import hypothesis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from drivers.media import BARCODE_RE
from tests.worker.harness import CATALOG as DEFINITION
from worker.intake.destinations import DestinationEvent, RejectedInput, record_events
from worker.intake.http.app import create_app
from worker.intake.mqtt import MqttIntake, Publish, parse_topic, to_event
from worker.seed.tasks import canonical_task_id
from worker.settings import HttpSettings, MqttSettings, Settings
from worker.state.journal import Journal

T = TypeVar("T")

PREFIX = "tapeworker"
NOW = 2000.0
USER, PASSWORD = "archive", "s3cret"


# -- strategies ---------------------------------------------------------------------

HUGE = 100_000
NASTY_STRINGS = [
    "",
    " ",
    "+",
    "#",
    ".",
    "..",
    "../..",
    "/",
    "//",
    "-rf",
    "--help",
    "$(reboot)",
    "`id`",
    "A;rm -rf /",
    "A B",
    "A\nB",
    "A\x00B",
    "\x7f",
    "\u202eL9",
    "١٢",
    "²",
    "\uff11\uff12",  # fullwidth digits
    "NOD400L9".translate({c: c + 0xFEE0 for c in range(0x21, 0x7F)}),  # fullwidth
    "NOD400L9\n",
    "NOD400L9 ",
    " NOD400L9",
    "nod400l9",
    "NOD400L9\u200b",
    "A" * 32,
    "A" * 33,
    "A" * 64,
    "A" * 65,
    "x" * 255,
    "x" * 256,
    "x" * 4097,
    "x" * HUGE,
    "é" * 1000,
    "\U0001f4a5",
    "\ufeff",
    "null",
    "0",
    "-1",
    "9" * 30,
]
KNOWN_BARCODES = ["NOD400L9", "NOD401L9", "CLN001CU"]
NASTY_INTS = [0, 1, 2, 3, 6, 7, 8, -1, -(2**63), 2**31, 2**53, 2**53 + 1, 2**63, 2**64, 10**100]

nasty_text = st.sampled_from(NASTY_STRINGS) | st.text(max_size=40)
short_nasty = st.sampled_from([n for n in NASTY_STRINGS if 0 < len(n) < 200]) | st.text(
    min_size=1, max_size=40
)


def mostly(common: st.SearchStrategy[T], rare: st.SearchStrategy[T]) -> st.SearchStrategy[T]:
    """`common` four times in five: hostile values, but enough valid ones to reach SQL."""
    return st.integers(0, 4).flatmap(lambda n: rare if n == 0 else common)


nasty_int = st.sampled_from(NASTY_INTS) | st.integers()
json_scalar = (
    st.sampled_from(["\ud800", "a\udfffb", "\udbff\udc00"])  # lone surrogates: JSON only
    | st.none()
    | st.booleans()
    | nasty_int
    | st.floats(allow_nan=True, allow_infinity=True)
    | nasty_text
)
json_value = st.recursive(
    json_scalar,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(nasty_text, inner, max_size=4),
    max_leaves=10,
)
barcode_value = st.sampled_from([*KNOWN_BARCODES, "ZZZ999L9", "ABC123"]) | nasty_text
pool_value = st.sampled_from(["offline-tapes", "online-tapes", "nas-copies", "nope"]) | nasty_text
body_dict = st.fixed_dictionaries(
    {},
    optional={
        "folder_id": nasty_int | json_value,
        "folder_path": nasty_text | json_value,
        "tape_id": st.sampled_from([1, 2, 3, 99]) | nasty_int | json_value,
        "tape_barcode": barcode_value | json_value,
        "pool_id": st.sampled_from([6, 7, 8, 99]) | nasty_int | json_value,
        "pool_name": pool_value | json_value,
        "id": json_value,
        "tape": json_value,
        "pool": json_value,
        "state": json_value,
        "extra": json_value,
        "": json_value,
    },
)


plausible_body = st.fixed_dictionaries(
    {"folder_id": mostly(st.integers(1, 5), nasty_int | json_value)},
    optional={
        "folder_path": mostly(st.just("/archive/run-1"), nasty_text),
        "tape_id": mostly(st.sampled_from([1, 2, 3, 99]), nasty_int),
        "tape_barcode": mostly(st.sampled_from([*KNOWN_BARCODES, "ZZZ999L9"]), barcode_value),
        "pool_id": mostly(st.sampled_from([6, 7, 8, 99]), nasty_int),
        "pool_name": mostly(
            st.sampled_from(["offline-tapes", "online-tapes", "nas-copies"]), pool_value
        ),
    },
)


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


junk_payload = st.one_of(
    st.just(b""),
    st.binary(max_size=200),
    json_value.map(_json_bytes),
    body_dict.map(_json_bytes),
    body_dict.map(lambda d: json.dumps(d).encode()),  # \u escapes, lone surrogates included
    st.sampled_from(
        [
            b"[" * 100_000,
            b'{"folder_id": ' + b"1" * 5000 + b"}",
            b'{"tape_id": 1e999}',
            b'{"tape_id": NaN}',
            b'{"tape_barcode": "\\ud800"}',
            b"\xff\xfe{}",
            b'{"tape_barcode": "NOD400L9", "tape_barcode": "-rf"}',
            b"\x00",
            b"  ",
        ]
    ),
)

segment = (
    st.sampled_from(["7", "8", "task_destinations", "create", "update", "destroy", "release"])
    | st.sampled_from(["1", "2", "3", "0", "00001", "9" * 15, "9" * 16, "-1", "+1", "1e3"])
    | short_nasty
)
valid_topic = st.builds(
    lambda task, dest, verb: f"{PREFIX}/tasks/{task}/task_destinations/{dest}/{verb}",
    st.sampled_from(["7", "8"]),
    st.sampled_from(["1", "2", "3"]),
    st.sampled_from(["create", "update", "destroy", "release"]),
)
segmented_topic = st.builds(
    lambda parts: f"{PREFIX}/tasks/" + "/".join(parts),
    st.lists(segment, min_size=0, max_size=8),
)
templated_topic = st.builds(
    lambda task, dest, verb: f"{PREFIX}/tasks/{task}/task_destinations/{dest}/{verb}",
    segment,
    segment,
    segment,
)
deep_topic = st.integers(5, 3000).map(lambda n: f"{PREFIX}/tasks/" + "/a" * n)
topic_text = mostly(
    valid_topic, st.one_of(segmented_topic, templated_topic, deep_topic, st.text(max_size=80))
)
event_id = st.none() | st.sampled_from(["e1", "e2", "x" * 129, "a b", "#"])


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    event_id: str | None


payload_bytes = mostly(st.just(b"") | plausible_body.map(_json_bytes), junk_payload)


@st.composite
def well_formed_message(draw: st.DrawFn) -> Message:
    """A valid topic with the payload its verb expects, mostly: these reach SQL."""
    topic = draw(valid_topic)
    expected = (
        plausible_body.map(_json_bytes) if topic.endswith(("/create", "/update")) else st.just(b"")
    )
    return Message(topic, draw(mostly(expected, junk_payload)), draw(event_id))


messages = mostly(well_formed_message(), st.builds(Message, topic_text, payload_bytes, event_id))

# -- helpers -----------------------------------------------------------------------


def run_with_journal(body: Callable[[Journal], Awaitable[T]]) -> T:
    """Run `body` on a fresh journal (with the catalog) in a fresh event loop."""

    async def main() -> T:
        with tempfile.TemporaryDirectory() as tmp:
            journal = await Journal.open(Path(tmp) / "journal.sqlite3")
            try:
                await journal.sync_catalog(DEFINITION, now=1000.0)
                return await body(journal)
            finally:
                await journal.close()

    return asyncio.run(main())


Rows = tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]


async def _rows(journal: Journal, sql: str) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in await journal._db.execute_fetchall(sql)]


async def desired_state(journal: Journal) -> Rows:
    """Every destination and request row, as stored."""
    return (
        await _rows(journal, "SELECT * FROM destinations ORDER BY id"),
        await _rows(journal, "SELECT * FROM requests ORDER BY id"),
    )


async def event_count(journal: Journal) -> int:
    [(count,)] = await _rows(journal, "SELECT COUNT(*) FROM events")
    return int(count)


async def assert_only_volume_tags(journal: Journal) -> None:
    """No barcode that is not a plain volume tag can reach the executor."""
    barcodes = await _rows(
        journal,
        "SELECT barcode FROM requests WHERE barcode IS NOT NULL "
        "UNION ALL SELECT barcode FROM destinations WHERE barcode IS NOT NULL",
    )
    for (barcode,) in barcodes:
        assert isinstance(barcode, str), barcode
        assert BARCODE_RE.fullmatch(barcode), barcode
    known = {b for (b,) in await _rows(journal, "SELECT barcode FROM tapes")}
    assert known == set(KNOWN_BARCODES), "intake must never add tapes to the catalog"


def note_outcome(status: str, reason: str | None) -> None:
    """Statistics (`--hypothesis-show-statistics`): do the examples reach the journal?"""
    hypothesis.event(status if reason is None else f"{status}: {reason.split(' ')[0]}")


# -- MQTT ----------------------------------------------------------------------------


async def apply_one_by_one(journal: Journal, batch: list[Message]) -> None:
    for message in batch:
        event = to_event(PREFIX, message.topic, message.payload, message.event_id)
        assert isinstance(event, DestinationEvent | RejectedInput)
        before_state = await desired_state(journal)
        before_events = await event_count(journal)
        [outcome] = await record_events(journal, [event], now=NOW, hold_seconds=60)
        note_outcome(outcome.status, outcome.reason)
        after_state = await desired_state(journal)
        after_events = await event_count(journal)

        if outcome.status == "duplicate":
            assert message.event_id is not None, "only a repeated event-id is a duplicate"
            assert after_events == before_events
        else:
            assert after_events == before_events + 1, "every input is journaled"
            [latest] = await journal.events(limit=1)
            assert latest.status == outcome.status
            assert latest.source == "mqtt"
        if isinstance(event, RejectedInput):
            assert outcome.status in ("rejected", "duplicate")
            assert event.reason
            assert event.topic is not None
            assert len(event.topic) <= 1024
        if outcome.status == "rejected":
            assert outcome.reason, "a rejection carries its reason"
            [latest] = await journal.events(limit=1)
            assert latest.reason == outcome.reason
        if outcome.status in ("rejected", "duplicate", "ignored"):
            assert after_state == before_state, f"{outcome} changed the desired state"
        if isinstance(event, DestinationEvent):
            # Only a topic that parses can become an event, and it parses to the same.
            assert parse_topic(PREFIX, message.topic) == (
                event.task_id,
                event.destination_id,
                event.verb,
            )
        await assert_only_volume_tags(journal)


async def apply_as_batch(journal: Journal, batch: list[Message]) -> None:
    events = [to_event(PREFIX, m.topic, m.payload, m.event_id) for m in batch]
    outcomes = await record_events(journal, events, now=NOW, hold_seconds=60)
    assert len(outcomes) == len(events)
    duplicates = sum(o.status == "duplicate" for o in outcomes)
    assert await event_count(journal) == len(events) - duplicates
    stored = await journal.events(limit=len(events) + 1)
    assert len(stored) == len(events) - duplicates
    for row in stored:
        if row.status == "rejected":
            assert row.reason
    for event, outcome in zip(events, outcomes, strict=True):
        if isinstance(event, RejectedInput):
            assert outcome.status in ("rejected", "duplicate")
    await assert_only_volume_tags(journal)


FAST = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@FAST
@given(st.lists(messages, min_size=1, max_size=6))
@example([Message(f"{PREFIX}/tasks/7/task_destinations/1/create", b"[" * 100_000, None)])
@example(
    [
        Message(
            f"{PREFIX}/tasks/7/task_destinations/1/create",
            b'{"tape_id": ' + b"1" * 5000 + b"}",
            None,
        )
    ]
)
@example([Message(f"{PREFIX}/tasks/7/task_destinations/١٢/create", b"{}", None)])
@example([Message(f"{PREFIX}/tasks/+/task_destinations/1/create", b"{}", None)])
@example([Message(f"{PREFIX}/tasks/../task_destinations/1/destroy", b"", None)])
@example([Message(f"{PREFIX}/tasks/#", b"", None)])
@example(
    [
        Message(
            f"{PREFIX}/tasks/7/task_destinations/1/create",
            b'{"folder_id": 1, "tape_barcode": "-rf"}',
            None,
        )
    ]
)
@example(
    [
        Message(
            f"{PREFIX}/tasks/7/task_destinations/1/create",
            b'{"folder_id": 1, "tape_barcode": "NOD400L9"}',
            "e1",
        ),
        Message(f"{PREFIX}/tasks/8/task_destinations/1/update", b'{"pool_id": 7}', None),
        Message(f"{PREFIX}/tasks/7/task_destinations/1/create", b"garbage", "e1"),
    ]
)
def test_mqtt_input_is_journaled_and_never_escapes(batch: list[Message]) -> None:
    run_with_journal(lambda journal: apply_one_by_one(journal, batch))


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(messages, min_size=1, max_size=12))
def test_mqtt_batch_commits_one_row_per_input(batch: list[Message]) -> None:
    run_with_journal(lambda journal: apply_as_batch(journal, batch))


async def commit_through_the_intake(journal: Journal, batch: list[Message]) -> None:
    """`MqttIntake._commit` and the publication after it, as the consumer calls them:
    rejected input goes to dead-letter."""
    changed: list[set[int]] = []

    async def on_change(ids: set[int]) -> None:
        changed.append(ids)

    intake = MqttIntake(
        MqttSettings(prefix=PREFIX),
        journal,
        hold_seconds=60,
        on_change=on_change,
        clock=lambda: NOW,
    )
    received = []
    for mid, message in enumerate(batch, start=1):
        user = (("event-id", message.event_id),) if message.event_id is not None else ()
        try:
            aiomqtt.Topic(message.topic)
        except ValueError:
            continue  # the broker refuses it (a wildcard, too long): it never reaches us
        delivered = Publish(mid, 1, False, message.topic, message.payload, user)
        received.append(intake._delivery(delivered))
    hypothesis.assume(received)
    await intake._commit(received, None)
    await intake.publish_changed()

    dead_letters = []
    while intake._outbox:
        where, payload, retain = intake._outbox.popleft()
        assert where == f"{PREFIX}/dead-letter"
        assert not retain
        dead_letters.append(json.loads(payload))
    rejected = await journal.events(status="rejected")
    assert len(dead_letters) == len(rejected), "each rejected input is dead-lettered once"
    assert [d["reason"] for d in dead_letters] == [e.reason for e in reversed(rejected)]
    for letter in dead_letters:
        assert letter["reason"]
    assert await event_count(journal) <= len(received)
    destinations = {d for (d,) in await _rows(journal, "SELECT id FROM destinations")}
    assert set().union(*changed) >= destinations, "every new destination is reported"
    await assert_only_volume_tags(journal)


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(messages, min_size=1, max_size=8))
def test_mqtt_consumer_dead_letters_every_rejection(batch: list[Message]) -> None:
    run_with_journal(lambda journal: commit_through_the_intake(journal, batch))


# -- HTTP ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    method: str
    task_id: str
    destination_id: str | None
    body: bytes | None
    auth: str | None  # None: the right credentials; else a raw Authorization header


path_id = mostly(
    st.sampled_from(["1", "2", "3"]),
    st.sampled_from(["0", "-1", "9" * 19, "9" * 30, "1.5", "1e3", "١٢", "+1"])
    | st.integers().map(str)
    | short_nasty,
)
task_segment = mostly(st.sampled_from(["7", "8"]), short_nasty)
bad_auth = st.one_of(
    st.just("Basic " + base64.b64encode(b"archive:wrong").decode()),
    st.just("Basic " + base64.b64encode(b"\xff\xfe:\x80").decode()),
    st.just("Basic " + base64.b64encode(b"nocolon").decode()),
    st.just("Basic !!!notbase64"),
    st.just("Bearer x"),
    st.just(""),
    st.binary(max_size=30).map(lambda b: "Basic " + base64.b64encode(b).decode()),
)
auth_header = mostly(st.none(), bad_auth)
calls = st.builds(
    Call,
    st.sampled_from(["POST", "POST", "PUT", "PUT", "DELETE", "GET", "RELEASE"]),
    task_segment,
    path_id,
    mostly(plausible_body.map(_json_bytes), st.none() | junk_payload),
    auth_header,
)


def _url(call: Call) -> str:
    task = urllib.parse.quote(call.task_id, safe="")
    url = f"/api/v2/tasks/{task}/task_destinations"
    if call.destination_id is not None and call.method != "POST":
        url += "/" + urllib.parse.quote(call.destination_id, safe="")
    if call.method == "RELEASE":
        url += "/release"
    return url


async def http_session(journal: Journal, script: list[Call]) -> None:
    app_settings = Settings(http=HttpSettings(users={USER: SecretStr(PASSWORD)}))
    changed: list[set[int]] = []

    async def on_change(ids: set[int]) -> None:
        changed.append(ids)

    app = create_app(journal, app_settings, on_change=on_change, clock=lambda: NOW)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://tapeworker") as client:
        for call in script:
            method = "POST" if call.method == "RELEASE" else call.method
            headers = {}
            if call.auth is None:
                token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
                headers["Authorization"] = f"Basic {token}"
            elif call.auth:
                headers["Authorization"] = call.auth
            content = call.body if method in ("POST", "PUT") else None
            before_state = await desired_state(journal)
            before_events = await event_count(journal)
            response = await client.request(method, _url(call), content=content, headers=headers)
            after_state = await desired_state(journal)
            after_events = await event_count(journal)

            note_outcome(f"http {response.status_code}", None)
            assert response.status_code < 500, (call, response.status_code, response.text[:500])
            if call.auth is not None:
                # Routing (307, 404, 405) and path checks (400) come first; any route then
                # asks for credentials.
                assert response.status_code in (307, 400, 401, 404, 405), "wrong credentials"
                # A redirect (307) has no body: read one only for a 400.
                assert response.status_code != 400 or (
                    "task_destination_id" in response.json().get("details", {})
                )
            # 409: a body that contradicts the library, journaled as rejected too.
            body_rejected = (
                response.status_code in (400, 409)
                and "task_destination_id" not in response.json()["details"]
            )
            if response.status_code >= 400:
                assert set(response.json()) == {"messages", "details"}, response.text[:500]
            if body_rejected:
                [reason] = response.json()["messages"]
                assert isinstance(reason, str), response.text[:500]
                assert reason, response.text[:500]
                assert after_events == before_events + 1, "a rejected body is journaled"
                [latest] = await journal.events(limit=1)
                assert (latest.source, latest.status, latest.reason) == ("http", "rejected", reason)
                assert after_state == before_state, "a rejected body changes nothing"
            elif response.status_code >= 300:
                # 400 for a malformed path, 404, 405; or 307 from an empty id
                # (`.../task_destinations/`).
                assert after_events == before_events
                assert after_state == before_state, "a refused call changes nothing"
            elif method != "GET":
                assert after_events == before_events + 1, "every accepted call is journaled"
            else:
                assert (after_events, after_state) == (before_events, before_state)
            if method == "POST" and call.method == "POST" and response.status_code == 201:
                created = response.json()
                record = await journal.destination(created["id"])
                assert record is not None
                assert record.task_id == (canonical_task_id(call.task_id) or call.task_id)
            await assert_only_volume_tags(journal)


@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(calls, min_size=1, max_size=6))
@example([Call("POST", "7", None, b"[" * 100_000, None)])
@example([Call("POST", "7", None, b'{"folder_id": ' + b"1" * 5000 + b"}", None)])
@example([Call("PUT", "7", "9" * 30, b"{}", None)])
@example([Call("DELETE", "7", "9" * 30, None, None)])
@example([Call("GET", "7", "9" * 30, None, None)])
@example([Call("PUT", "7", str(-(2**63) - 1), b"{}", None)])
@example([Call("RELEASE", "7", "9" * 30, None, None)])
@example([Call("POST", "7", None, b'{"folder_id": 1, "tape_barcode": "$(reboot)"}', None)])
@example([Call("POST", "7", None, b"{}", "Basic " + base64.b64encode(b"\xff:\xfe").decode())])
def test_http_answers_4xx_never_5xx(script: list[Call]) -> None:
    run_with_journal(lambda journal: http_session(journal, script))


# -- regressions, spelled out -------------------------------------------------------


async def _mqtt_outcome(journal: Journal, topic: str, payload: bytes) -> tuple[str, str | None]:
    event = to_event(PREFIX, topic, payload)
    [outcome] = await record_events(journal, [event], now=NOW, hold_seconds=60)
    assert await desired_state(journal) == ([], [])
    [latest] = await journal.events(limit=1)
    assert latest.status == "rejected"
    return outcome.status, outcome.reason


def test_deeply_nested_json_is_rejected_not_a_recursion_error() -> None:
    status, reason = run_with_journal(
        lambda j: _mqtt_outcome(j, f"{PREFIX}/tasks/7/task_destinations/1/create", b"[" * 100_000)
    )
    assert status == "rejected"
    assert reason is not None
    assert "JSON" in reason


def test_an_integer_too_long_to_convert_is_rejected() -> None:
    payload = b'{"folder_id": 1, "tape_id": ' + b"9" * 5000 + b"}"
    status, reason = run_with_journal(
        lambda j: _mqtt_outcome(j, f"{PREFIX}/tasks/7/task_destinations/1/create", payload)
    )
    assert status == "rejected"
    assert reason is not None
    assert "JSON" in reason


def test_an_option_lookalike_barcode_never_becomes_a_request() -> None:
    payload = b'{"folder_id": 1, "tape_barcode": "-rf"}'
    status, reason = run_with_journal(
        lambda j: _mqtt_outcome(j, f"{PREFIX}/tasks/7/task_destinations/1/create", payload)
    )
    assert status == "rejected"
    assert reason is not None
    assert "tape_barcode" in reason


async def _http(
    journal: Journal, method: str, url: str, body: bytes | None = None
) -> httpx.Response:
    app = create_app(
        journal,
        Settings(http=HttpSettings(users={USER: SecretStr(PASSWORD)})),
        on_change=_ignore,
        clock=lambda: NOW,
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://tapeworker") as client:
        return await client.request(method, url, content=body, auth=(USER, PASSWORD))


async def _ignore(_: set[int]) -> None:
    return None


def test_http_destination_id_beyond_sqlite_range_is_refused() -> None:
    # It used to reach SQLite and overflow its integer: a 500.
    for big in ("9" * 30, str(-(2**63) - 1)):
        url = "/api/v2/tasks/7/task_destinations/" + big
        calls = (("GET", url), ("PUT", url), ("DELETE", url), ("POST", url + "/release"))
        for method, path in calls:
            response = run_with_journal(
                functools.partial(_http, method=method, url=path, body=b"{}")
            )
            assert response.status_code == 400, (method, response.status_code)
            assert response.json()["details"]["task_destination_id"][0]["value"] == big


def test_http_deeply_nested_body_is_a_400_with_a_reason() -> None:
    response = run_with_journal(
        lambda j: _http(j, "POST", "/api/v2/tasks/7/task_destinations", b"[" * 100_000)
    )
    assert response.status_code == 400
    assert "JSON" in response.json()["messages"][0]


def test_both_intakes_carry_the_folder_size_to_the_request() -> None:
    payload = json.dumps(
        {
            "tape_barcode": "NOD400L9",
            "folder": {"id": 5, "name": "f", "type": "folder", "size": 4096},
        }
    ).encode()

    async def both(journal: Journal) -> list[int | None]:
        event = to_event(PREFIX, f"{PREFIX}/tasks/7/task_destinations/1/create", payload)
        await record_events(journal, [event], now=NOW, hold_seconds=60)
        response = await _http(journal, "POST", "/api/v2/tasks/7/task_destinations", payload)
        assert response.status_code < 300, response.text
        return [r.size_bytes for r in await journal.requests()]

    assert run_with_journal(both) == [4096, 4096]
