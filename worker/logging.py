"""structlog set-up: console for people, JSON lines for machines, journald priorities."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

_PRIORITY = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2, "exception": 3}


def _journald_prefix(_: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    # journald reads a `<N>` prefix as the syslog priority, so `journalctl -p err` works.
    event["_priority"] = _PRIORITY.get(method, 6)
    return event


def _render_journald(_: Any, __: str, event: dict[str, Any]) -> str:
    priority = event.pop("_priority", 6)
    return f"<{priority}>" + structlog.processors.JSONRenderer()(_, __, event)  # type: ignore[operator]


def configure(level: str = "info", fmt: str = "console") -> None:
    numeric = getattr(logging, level.upper())
    logging.basicConfig(level=numeric, stream=sys.stderr, format="%(message)s")
    # aiosqlite logs every statement at debug level: noise, even when debugging us.
    logging.getLogger("aiosqlite").setLevel(max(numeric, logging.INFO))
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    if fmt == "json":
        processors.append(structlog.processors.JSONRenderer())
    elif fmt == "journald":
        processors += [_journald_prefix, _render_journald]
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=False))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stdout),
        cache_logger_on_first_use=True,
    )
