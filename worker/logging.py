"""One logging pipeline: our structlog events and every stdlib logger (uvicorn, drivers).

Both end in one handler on the root logger, rendered by structlog's ProcessorFormatter:
console lines for people, one JSON object per line for machines, or native journal
entries under systemd, with PRIORITY and a field per key (`journalctl BARCODE=NOD400L8`,
`DRIVE=1`). The level lives on the root logger, so SIGHUP can change it (`set_level`).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import structlog
from logging_journald import JournaldTransport

#: syslog priorities, as journald and `journalctl -p` use them.
PRIORITY = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2}
JOURNAL_SOCKET = Path("/run/systemd/journal/socket")
_FIELD = re.compile(r"[^A-Z0-9_]")

_SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def journal_fields(event: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """A rendered event as journal fields: MESSAGE for people, one field per key."""
    event = dict(event)
    message = str(event.pop("event", ""))
    level = str(event.pop("level", "info"))
    event.pop("timestamp", None)  # journald stamps every entry itself
    details = " ".join(f"{k}={v}" for k, v in event.items() if k not in ("logger", "exception"))
    text = f"{message} {details}" if details else message
    if "exception" in event:
        text += "\n" + str(event["exception"])
    fields: list[tuple[str, Any]] = [
        ("MESSAGE", text),
        ("PRIORITY", PRIORITY.get(level, 6)),
        ("SYSLOG_IDENTIFIER", "tapeworker"),
    ]
    for key, value in event.items():
        # Journal field names: upper case, digits and underscores, no leading underscore
        # (those are journald's own trusted fields).
        name = _FIELD.sub("_", key.upper()).lstrip("_")
        if not name or name[0].isdigit():
            continue
        if value is None:
            continue
        plain = isinstance(value, str | int | float)
        fields.append((name, value if plain else json.dumps(value, default=str)))
    return fields


class JournalHandler(logging.Handler):
    """Writes each record as a native journal entry (logging-journald speaks the protocol)."""

    def __init__(self, socket_path: Path = JOURNAL_SOCKET) -> None:
        super().__init__()
        self.transport = JournaldTransport(socket_path=socket_path)
        self.setFormatter(
            structlog.stdlib.ProcessorFormatter(
                processors=[
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info,
                    # The formatter must return text: the fields travel as JSON to emit().
                    lambda _, __, event: json.dumps(journal_fields(event), default=str),
                ],
                foreign_pre_chain=_SHARED,
            )
        )

    def close(self) -> None:
        self.transport.socket.close()
        super().close()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.transport.send(json.loads(self.format(record)))
        except Exception:  # a log line must never take the daemon down
            self.handleError(record)


def _stream_handler(fmt: str) -> logging.Handler:
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
            foreign_pre_chain=_SHARED,
        )
    )
    return handler


def configure(
    level: str = "info", fmt: str = "console", *, journal_socket: Path = JOURNAL_SOCKET
) -> None:
    """Route structlog and stdlib logging through one handler in the chosen format."""
    handler: logging.Handler
    fallback = None
    if fmt == "journald":
        try:
            if not journal_socket.exists():
                raise FileNotFoundError(2, "no such socket")
            handler = JournalHandler(journal_socket)
        except OSError as exc:
            # Not under systemd after all: JSON lines on stdout lose nothing.
            handler = _stream_handler("json")
            fallback = f"{journal_socket}: {exc.strerror or exc}"
    else:
        handler = _stream_handler(fmt)
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_SHARED,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.stdlib.BoundLogger,
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    set_level(level)
    if fallback is not None:
        structlog.get_logger("tapeworker.logging").warning(
            "journald not reachable, logging JSON to stdout", problem=fallback
        )


def set_level(level: str) -> None:
    """The level of every logger; SIGHUP applies the configuration's log_level with it."""
    numeric = getattr(logging, level.upper())
    logging.getLogger().setLevel(numeric)
