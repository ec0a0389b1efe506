"""The CLI's operator commands: a client of the running daemon's /admin routes.

`drive up|down N`, `tape clear-check|lock|unlock BARCODE`, `drain`, `resume`,
`release DESTINATION`. The daemon is the only writer of its journal, so these ask
it. They send an API key (`--api-key` or `$TAPEWORKER_API_KEY`) as a Bearer token,
else the first of `[http] admin_users` (or `--user`) and its password from the same
configuration file the daemon reads, as HTTP Basic.
"""

from __future__ import annotations

import argparse
import base64
import getpass
import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from worker.settings import Settings

COMMANDS = ("drive", "tape", "drain", "resume", "release")
EXIT_REFUSED = 1
_LOGIN = re.compile(r"^[\w.@-]{1,64}$")


def add_commands(
    commands: argparse._SubParsersAction,  # type: ignore[type-arg]
    config_arg: Callable[[argparse.ArgumentParser], None],
) -> None:
    """The operator's subcommands, each with --config, --user and --reason."""

    def common(parser: argparse.ArgumentParser, *, reason_required: bool) -> None:
        config_arg(parser)
        credential_args(parser)
        parser.add_argument(
            "--reason", required=reason_required, help="why: journaled, logged, published"
        )

    drive = commands.add_parser("drive", help="mark a drive up (gets work again) or down")
    drive.add_argument("state", choices=("up", "down"))
    drive.add_argument("index", type=int, help="the changer's drive number")
    common(drive, reason_required=True)
    tape = commands.add_parser("tape", help="clear a tape's need_to_check, lock or unlock it")
    tape.add_argument("action", choices=("clear-check", "lock", "unlock"))
    tape.add_argument("barcode")
    common(tape, reason_required=False)
    drain = commands.add_parser(
        "drain", help="finish what is mounted, mount nothing new (for maintenance)"
    )
    common(drain, reason_required=False)
    resume = commands.add_parser("resume", help="end a drain: mount again")
    common(resume, reason_required=False)
    release = commands.add_parser("release", help="release a ready destination's drive")
    release.add_argument("destination", type=int)
    common(release, reason_required=False)


def credential_args(parser: argparse.ArgumentParser) -> None:
    """How a command authenticates to the daemon: an API key, else Basic."""
    parser.add_argument("--user", help="HTTP user (default: the first of admin_users)")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("TAPEWORKER_API_KEY"),
        help="an API key holding the command's admin/... scope (default: "
        "$TAPEWORKER_API_KEY; without one, HTTP Basic as --user)",
    )


def _path(args: argparse.Namespace) -> str:
    if args.command == "drive":
        return f"/admin/drives/{args.index}/{args.state}"
    if args.command == "tape":
        return f"/admin/tapes/{urllib.parse.quote(args.barcode, safe='')}/{args.action}"
    if args.command == "release":
        return f"/admin/destinations/{args.destination}/release"
    return f"/admin/{args.command}"


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Send the command to the daemon; print its answer or its error."""
    answer = call(args, settings, "POST", _path(args), {"reason": args.reason})
    if answer is None:
        return EXIT_REFUSED
    print(" ".join(f"{k}={v}" for k, v in answer.items()))
    return 0


def api_key(args: argparse.Namespace, settings: Settings) -> int:
    """`api-key create|list|revoke`: the daemon stores the key (only its digest)."""
    if args.action == "create":
        body = {"reason": args.reason, "name": args.name, "scopes": args.scope}
        answer = call(args, settings, "POST", "/admin/api_keys", body)
        if answer is None:
            return EXIT_REFUSED
        print(answer["key"])
        print(
            f"API key {answer['name']!r} with {', '.join(answer['scopes'])}: "
            "shown once, store it now",
            file=sys.stderr,
        )
        return 0
    if args.action == "revoke":
        name = urllib.parse.quote(args.name, safe="")
        answer = call(
            args, settings, "POST", f"/admin/api_keys/{name}/revoke", {"reason": args.reason}
        )
        if answer is None:
            return EXIT_REFUSED
        print(f"revoked {answer['name']}")
        return 0
    answer = call(args, settings, "GET", "/admin/api_keys", None)
    if answer is None:
        return EXIT_REFUSED
    rows: list[dict[str, Any]] = answer["api_keys"]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        state = f"revoked {row['revoked']}" if row["revoked"] else "live"
        print(f"{row['name']}: {state}, created {row['created']}: {' '.join(row['scopes'])}")
    return 0


def call(
    args: argparse.Namespace,
    settings: Settings,
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> dict[str, Any] | None:
    """The daemon's answer to one admin request; None (said on stderr) when refused."""
    http = settings.http
    authorization = credentials(args, settings)
    if authorization is None:
        print(
            "tapeworker: no credentials: give --api-key (or $TAPEWORKER_API_KEY), or name "
            "an operator in [http] admin_users (with its password in [http.users])",
            file=sys.stderr,
        )
        return None
    # The listener may be on every address; we talk to it on loopback then.
    host = "127.0.0.1" if http.host in ("0.0.0.0", "", "::") else http.host  # noqa: S104
    headers = {"Authorization": authorization}
    data = None
    if body is not None:
        login = getpass.getuser()
        data = json.dumps({**body, "by": login if _LOGIN.match(login) else None}).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(
        f"http://{host}:{http.port}{path}", data=data, headers=headers, method=method
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            answer: dict[str, Any] = json.loads(response.read())
            return answer
    except urllib.error.HTTPError as exc:
        print(f"tapeworker: refused ({exc.code}): {_messages(exc)}", file=sys.stderr)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        print(
            f"tapeworker: the daemon does not answer on {host}:{http.port} ({reason}); "
            "is it running?",
            file=sys.stderr,
        )
    return None


def credentials(args: argparse.Namespace, settings: Settings) -> str | None:
    """The Authorization header: the API key if one is given, else an operator's Basic."""
    if args.api_key:
        return f"Bearer {args.api_key.strip()}"
    http = settings.http
    user = args.user or (http.admin_users[0] if http.admin_users else None)
    if user is None or user not in http.users:
        return None
    password = http.users[user].get_secret_value()
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _messages(error: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(error.read())
    except ValueError:
        return str(error.reason)
    if isinstance(body, dict) and isinstance(body.get("messages"), list):
        return "; ".join(str(m) for m in body["messages"])
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])
    return str(body)
