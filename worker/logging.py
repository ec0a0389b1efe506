"""One logging pipeline: our structlog events and every stdlib logger (uvicorn, drivers).

Our events stay in structlog from the call to the write: a bound logger that checks the
level first, a short processor chain, then one `Output` that renders the event dict and
writes it (a line on stdout, or a native journal entry). Stdlib records reach the same
`Output` through one handler on the root logger, so both end in the same stream and the
same format: console lines for people, one JSON object per line for machines, or journal
entries under systemd, with PRIORITY and a field per key (`journalctl BARCODE=NOD400L8`,
`DRIVE=1`). The one level is the root logger's: SIGHUP changes it (`set_level`) and our
loggers read it at every call, so loggers bound and cached before the change obey it.
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import re
import struct
import sys
import threading
import time
from collections.abc import Callable, Mapping, MutableMapping
from pathlib import Path
from typing import Any, Protocol, TextIO

import orjson
import structlog
from logging_journald import JournaldTransport

#: syslog priorities, as journald and `journalctl -p` use them.
PRIORITY = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2}
#: stdlib's numeric levels, by our names of them.
_LEVELS: dict[str, int] = {name: getattr(logging, name.upper()) for name in PRIORITY}
JOURNAL_SOCKET = Path("/run/systemd/journal/socket")
_FIELD = re.compile(r"[^A-Z0-9_]")
_NOT_FIELDS = frozenset(("event", "level", "timestamp"))
_PLAIN = (str, int, float)
_ROOT = logging.getLogger()

EventDict = MutableMapping[str, Any]


@functools.lru_cache(maxsize=1024)
def _field_name(key: str) -> str | None:
    """Journal field names: upper case, digits and underscores, no leading underscore
    (those are journald's own trusted fields), not starting with a digit."""
    name = _FIELD.sub("_", key.upper()).lstrip("_")
    return None if not name or name[0].isdigit() else name


def journal_fields(event: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """A rendered event as journal fields: MESSAGE for people, one field per key."""
    # One pass over the event: this runs for every line the daemon writes under systemd.
    fields: list[tuple[str, Any]] = []
    details: list[str] = []
    exception = None
    for key, value in event.items():
        if key in _NOT_FIELDS:
            continue  # journald stamps every entry itself; level and event are said above
        if key == "exception":
            exception = value
        elif key != "logger":
            details.append(f"{key}={value}")
        if value is None:
            continue
        name = _field_name(key)
        if name is None:
            continue
        plain = isinstance(value, _PLAIN)
        fields.append((name, value if plain else json.dumps(value, default=str)))
    text = str(event.get("event", ""))
    if details:
        text = f"{text} {' '.join(details)}"
    if exception is not None:
        text = f"{text}\n{exception}"
    level = PRIORITY.get(str(event.get("level", "info")), 6)
    return [("MESSAGE", text), ("PRIORITY", level), ("SYSLOG_IDENTIFIER", "tapeworker"), *fields]


class Output(Protocol):
    """Renders an event dict and writes it: the last step of every line."""

    def emit(self, event: EventDict) -> None: ...

    def close(self) -> None: ...


class _Clock:
    """ISO 8601 UTC timestamps with microseconds, as structlog's TimeStamper writes them,
    for a fifth of its cost: the date and time of day are formatted once a second."""

    def __init__(self) -> None:
        self._second: tuple[int, str] = (-1, "")  # one tuple: threads read it whole

    def now(self) -> str:
        now = time.time()
        second = int(now)
        cached, prefix = self._second
        if second != cached:
            prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = (second, prefix)
        return f"{prefix}.{int((now - second) * 1_000_000):06d}Z"


_clock = _Clock()


def render_json(event: EventDict) -> str:
    """One JSON object; values JSON cannot hold are written as their repr()."""
    try:
        return orjson.dumps(event, default=repr, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        # orjson refuses what the stdlib encoder takes (integers past 64 bits, say).
        return json.dumps(event, default=repr)


class StreamOutput:
    """Lines on a text stream, each written and flushed whole under one lock."""

    def __init__(self, stream: TextIO | None, render: Callable[[EventDict], str]) -> None:
        self.stream = stream
        self.render = render
        # Stdlib records may come from other threads (executors, uvicorn's).
        self._lock = threading.Lock()

    def emit(self, event: EventDict) -> None:
        event["timestamp"] = _clock.now()
        line = self.render(event) + "\n"
        stream = self.stream or sys.stdout  # None: wherever stdout is at the time
        with self._lock:
            stream.write(line)
            stream.flush()

    def close(self) -> None:
        # The stream is stdout: not ours to close.
        return


_LENGTH = struct.Struct("<Q")


def journal_entry(fields: list[tuple[str, Any]]) -> bytes:
    """Journal fields as one datagram of the native protocol: `KEY=value` lines, and a
    value with a newline (a traceback) as its key, its 64-bit length and its bytes."""
    lines = []
    for name, value in fields:
        text = value if isinstance(value, str) else str(value)
        if "\n" in text:
            data = text.encode()
            lines.append(b"%s\n%s%s\n" % (name.encode(), _LENGTH.pack(len(data)), data))
        else:
            lines.append(f"{name}={text}\n".encode())
    return b"".join(lines)


class JournalOutput:
    """Native journal entries, one datagram each; an entry too large for a datagram goes
    through logging-journald, which hands it over in a sealed memfd."""

    def __init__(self, socket_path: Path = JOURNAL_SOCKET) -> None:
        # Addressed on every send, as libsystemd does: a journald restarted (a new socket
        # at the path) is reached again without reconnecting, and one that is down costs
        # the lines sent meanwhile, not every line after.
        self.transport = JournaldTransport(socket_path=socket_path, connected=False)
        self._address = str(socket_path)

    def emit(self, event: EventDict) -> None:
        fields = journal_fields(event)
        try:
            self.transport.socket.sendto(journal_entry(fields), self._address)
        except OSError as exc:
            if exc.errno != errno.EMSGSIZE:
                raise
            self.transport.send(fields)

    def close(self) -> None:
        self.transport.socket.close()


def _console() -> Callable[[EventDict], str]:
    renderer = structlog.dev.ConsoleRenderer(colors=False)
    return lambda event: renderer(None, "", event)


class _Sink:
    """The one place lines go; `configure` swaps its output, so loggers cached on first
    use (module-level ones) follow a change of format."""

    def __init__(self) -> None:
        self.output: Output = StreamOutput(None, render_json)
        self.lost = 0

    def emit(self, event: EventDict) -> None:
        try:
            self.output.emit(event)
        except Exception as exc:  # a log line must never take the daemon down
            self.lose(exc)

    def lose(self, exc: BaseException) -> None:
        """Count a line that could not be written and say so on stderr, if that works."""
        self.lost += 1
        try:
            sys.stderr.write(f"tapeworker: log line lost ({type(exc).__name__}: {exc})\n")
            sys.stderr.flush()
        except Exception:  # noqa: S110 - nowhere left to say it
            pass


_SINK = _Sink()


class _Named:
    """The logger structlog wraps: one per name, all writing to the sink."""

    __slots__ = ("name",)

    def __init__(self, name: str | None = None) -> None:
        self.name = name or "tapeworker"

    # Called with the last processor's result, one event dict whatever the level (the
    # level is in it).
    def write(self, event: EventDict) -> None:
        event["logger"] = self.name
        _SINK.emit(event)

    debug = info = warning = warn = error = critical = exception = msg = write


def lost_lines() -> int:
    """Lines that could not be written since the start (a broken stream or socket)."""
    return _SINK.lost


def _to_sink(_: Any, __: str, event: EventDict) -> tuple[tuple[EventDict], dict[str, Any]]:
    # The event dict travels whole to the sink, which renders it for the current output.
    return (event,), {}


def _level_method(level: int, name: str) -> Callable[..., None]:
    def method(self: BoundLogger, event: str, *args: Any, **kw: Any) -> None:
        if level < _ROOT.level:
            return
        try:
            self._proxy_to_logger(name, event % args if args else event, **kw)
        except Exception as exc:  # a value whose rendering raises loses one line, not more
            _SINK.lose(exc)

    method.__name__ = name
    return method


def _exception(self: BoundLogger, event: str, *args: Any, **kw: Any) -> None:
    kw.setdefault("exc_info", True)
    self.error(event, *args, **kw)


def _log(self: BoundLogger, level: int, event: str, *args: Any, **kw: Any) -> None:
    getattr(self, logging.getLevelName(level).lower(), self.info)(event, *args, **kw)


class BoundLogger(structlog.BoundLoggerBase):
    """structlog's bound logger with the level read at each call (not fixed at creation,
    as structlog's filtering loggers are): below it a call costs one comparison."""

    debug = _level_method(logging.DEBUG, "debug")
    info = _level_method(logging.INFO, "info")
    warning = _level_method(logging.WARNING, "warning")
    error = _level_method(logging.ERROR, "error")
    critical = _level_method(logging.CRITICAL, "critical")
    warn = warning
    msg = info
    fatal = critical
    exception = _exception
    log = _log


class StdlibHandler(logging.Handler):
    """Stdlib records (uvicorn, drivers, asyncio) as event dicts, written by our output."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            event: EventDict = {
                "event": record.getMessage(),
                "level": record.levelname.lower(),
                "logger": record.name,
            }
            if record.exc_info:
                event["exc_info"] = record.exc_info
            structlog.contextvars.merge_contextvars(None, "", event)
            structlog.processors.format_exc_info(None, "", event)
        except Exception as exc:  # a record whose message cannot be built
            _SINK.lose(exc)
            return
        _SINK.emit(event)


def _output(fmt: str, journal_socket: Path) -> tuple[Output, str | None]:
    if fmt == "journald":
        try:
            if not journal_socket.exists():
                raise FileNotFoundError(2, "no such socket")
            return JournalOutput(journal_socket), None
        except OSError as exc:
            # Not under systemd after all: JSON lines on stdout lose nothing.
            return StreamOutput(sys.stdout, render_json), f"{journal_socket}: {exc.strerror or exc}"
    return StreamOutput(sys.stdout, render_json if fmt == "json" else _console()), None


def configure(
    level: str = "info", fmt: str = "console", *, journal_socket: Path = JOURNAL_SOCKET
) -> None:
    """Route structlog and stdlib logging to one output in the chosen format."""
    output, fallback = _output(fmt, journal_socket)
    previous, _SINK.output = _SINK.output, output
    previous.close()
    for old in _ROOT.handlers[:]:
        _ROOT.removeHandler(old)
        old.close()
    _ROOT.addHandler(StdlibHandler())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.format_exc_info,
            _to_sink,
        ],
        wrapper_class=BoundLogger,
        logger_factory=_Named,
        cache_logger_on_first_use=True,
    )
    set_level(level)
    if fallback is not None:
        structlog.get_logger("tapeworker.logging").warning(
            "journald not reachable, logging JSON to stdout", problem=fallback
        )


def reset() -> None:
    """Close the output and go back to structlog's defaults (tests and benchmarks)."""
    _SINK.output.close()
    _SINK.output = StreamOutput(None, render_json)
    structlog.reset_defaults()


def level_enabled(level: str) -> bool:
    """Whether a line at `level` is written: for work done only to make such lines."""
    return _LEVELS[level] >= _ROOT.level


def set_level(level: str) -> None:
    """The level of every logger; SIGHUP applies the configuration's log_level with it."""
    numeric = getattr(logging, level.upper())
    _ROOT.setLevel(numeric)
    # A stdlib logger with a level of its own (uvicorn pins its loggers at warning) is
    # still held to ours where it is stricter.
    for handler in _ROOT.handlers:
        if isinstance(handler, StdlibHandler):
            handler.setLevel(numeric)
