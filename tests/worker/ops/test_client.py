"""The CLI's operator commands as a client: which route each command asks, with which
credentials and body, and what it says when refused or unanswered. The daemon's own
routes answer them end to end in tests/integration/test_operator.py; here a plain HTTP
server on loopback records what arrives."""

from __future__ import annotations

import argparse
import base64
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pydantic import SecretStr

from tests.integration.broker import free_port
from worker.ops.client import EXIT_REFUSED, add_commands, api_key, credentials, run
from worker.settings import HttpSettings, Settings


@dataclass
class Received:
    method: str
    path: str
    authorization: str | None
    body: dict[str, Any] | None


@dataclass
class Listener:
    """Answers every request with `status` and `answer`, and keeps what it received."""

    port: int
    status: int = 200
    answer: object = field(default_factory=lambda: {"ok": True})
    received: list[Received] = field(default_factory=list)


@pytest.fixture
def listener() -> Iterator[Listener]:
    state = Listener(port=0)

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            state.received.append(
                Received(
                    self.command,
                    self.path,
                    self.headers.get("Authorization"),
                    json.loads(raw) if raw else None,
                )
            )
            payload = json.dumps(state.answer).encode()
            self.send_response(state.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _answer

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=30)


def settings_on(port: int, **http: Any) -> Settings:
    return Settings(
        http=HttpSettings(
            port=port,
            users={"ops": SecretStr("pw"), "ann": SecretStr("pw2")},
            admin_users=["ops"],
            **http,
        )
    )


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command")
    add_commands(commands, lambda p: None)
    api = commands.add_parser("api-key")
    api.add_argument("action", choices=("create", "list", "revoke"))
    api.add_argument("name", nargs="?")
    api.add_argument("--scope", action="append")
    api.add_argument("--json", action="store_true")
    api.add_argument("--reason")
    api.add_argument("--user")
    api.add_argument("--api-key")
    return parser.parse_args(list(argv))


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    ("argv", "path"),
    [
        (("drive", "down", "2", "--reason", "noisy"), "/admin/drives/2/down"),
        (("tape", "clear-check", "NOD400L8"), "/admin/tapes/NOD400L8/clear-check"),
        (("tape", "lock", "A/B"), "/admin/tapes/A%2FB/lock"),
        (("drain",), "/admin/drain"),
        (("resume",), "/admin/resume"),
        (("release", "12"), "/admin/destinations/12/release"),
    ],
)
def test_each_command_posts_to_its_route(
    listener: Listener, argv: tuple[str, ...], path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    listener.answer = {"drive": 2, "up": False}
    assert run(parse(*argv, "--api-key", "k"), settings_on(listener.port)) == 0
    [received] = listener.received
    assert (received.method, received.path) == ("POST", path)
    assert received.body is not None
    assert set(received.body) == {"reason", "by"}
    assert capsys.readouterr().out == "drive=2 up=False\n"


def test_a_drive_command_needs_a_reason() -> None:
    with pytest.raises(SystemExit):
        parse("drive", "down", "2")


def test_an_api_key_goes_first_then_an_operators_basic_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TAPEWORKER_API_KEY", raising=False)
    settings = settings_on(1)
    assert credentials(parse("drain", "--api-key", " key1 "), settings) == "Bearer key1"
    assert credentials(parse("drain"), settings) == basic("ops", "pw")
    assert credentials(parse("drain", "--user", "ann"), settings) == basic("ann", "pw2")
    assert credentials(parse("drain", "--user", "nobody"), settings) is None
    assert credentials(parse("drain"), Settings()) is None
    monkeypatch.setenv("TAPEWORKER_API_KEY", "from-env")
    assert credentials(parse("drain"), settings) == "Bearer from-env"


def test_without_credentials_nothing_is_sent(
    listener: Listener, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TAPEWORKER_API_KEY", raising=False)
    settings = Settings(http=HttpSettings(port=listener.port))
    assert run(parse("drain"), settings) == EXIT_REFUSED
    assert listener.received == []
    assert "no credentials" in capsys.readouterr().err


def test_a_refusal_shows_the_daemons_messages(
    listener: Listener, capsys: pytest.CaptureFixture[str]
) -> None:
    listener.status = 403
    listener.answer = {"messages": ["Forbidden.", "needs admin/drain"], "details": {}}
    assert run(parse("drain", "--api-key", "k"), settings_on(listener.port)) == EXIT_REFUSED
    assert capsys.readouterr().err.strip() == (
        "tapeworker: refused (403): Forbidden.; needs admin/drain"
    )


def test_a_daemon_that_does_not_answer_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()  # nothing listens there
    assert run(parse("drain", "--api-key", "k"), settings_on(port)) == EXIT_REFUSED
    err = capsys.readouterr().err
    assert f"the daemon does not answer on 127.0.0.1:{port}" in err
    assert "is it running?" in err


def test_a_listener_on_every_address_is_reached_on_loopback(listener: Listener) -> None:
    settings = settings_on(listener.port, host="0.0.0.0")
    assert run(parse("resume", "--api-key", "k"), settings) == 0
    assert listener.received[0].path == "/admin/resume"


def test_api_keys_are_created_listed_and_revoked(
    listener: Listener, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = settings_on(listener.port)
    listener.answer = {"key": "tw_secret", "name": "ci", "scopes": ["admin/drain"]}
    args = parse("api-key", "create", "ci", "--scope", "admin/drain", "--reason", "ci runs")
    assert api_key(args, settings) == 0
    out = capsys.readouterr()
    assert out.out == "tw_secret\n"
    assert "shown once" in out.err
    created = listener.received[-1]
    assert (created.method, created.path) == ("POST", "/admin/api_keys")
    assert created.authorization == basic("ops", "pw")
    assert created.body is not None
    assert (created.body["name"], created.body["scopes"]) == ("ci", ["admin/drain"])

    listener.answer = {
        "api_keys": [
            {"name": "ci", "revoked": None, "created": "2026-01-01", "scopes": ["admin/drain"]},
            {"name": "old", "revoked": "2026-02-01", "created": "2025-01-01", "scopes": []},
        ]
    }
    assert api_key(parse("api-key", "list"), settings) == 0
    assert capsys.readouterr().out.splitlines() == [
        "ci: live, created 2026-01-01: admin/drain",
        "old: revoked 2026-02-01, created 2025-01-01: ",
    ]
    assert listener.received[-1].method == "GET"
    assert api_key(parse("api-key", "list", "--json"), settings) == 0
    assert [k["name"] for k in json.loads(capsys.readouterr().out)] == ["ci", "old"]

    listener.answer = {"name": "c i"}
    assert api_key(parse("api-key", "revoke", "c i", "--reason", "leaked"), settings) == 0
    assert listener.received[-1].path == "/admin/api_keys/c%20i/revoke"
    assert capsys.readouterr().out == "revoked c i\n"
