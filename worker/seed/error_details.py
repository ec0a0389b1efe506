"""Per-attribute error details and the one error body, in the archive manager's
vocabulary.

Pure helpers shared by every HTTP route and the intakes: the API and the operator's
routes answer with them, the journal keeps the reason they add up to.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

#: attribute -> [{"error": kind, "value": what was received}]
Details = Mapping[str, Sequence[Mapping[str, str]]]

#: How much of a received value an error repeats back: enough to recognise it.
VALUE_CHARS = 200

#: pydantic's error types -> the archive manager's error kinds.
_KINDS = {
    "missing": "blank",
    "greater_than": "greater_than",
    "greater_than_equal": "greater_than_or_equal_to",
    "less_than": "less_than",
    "less_than_equal": "less_than_or_equal_to",
    "string_too_long": "too_long",
    "too_long": "too_long",
    "string_too_short": "too_short",
    "too_short": "too_short",
    "extra_forbidden": "unknown_attribute",
}


def printable(text: str) -> str:
    """Text that encodes as UTF-8: lone surrogates a client sent are escaped."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def shown_value(value: object) -> str:
    """A received value as an error repeats it: a string, cut to a readable length."""
    text = value if isinstance(value, str) else repr(value)
    text = text if len(text) <= VALUE_CHARS else text[:VALUE_CHARS] + "..."
    return printable(text)


def detail(kind: str, value: object) -> dict[str, str]:
    return {"error": kind, "value": shown_value(value)}


def validation_details(errors: Sequence[Mapping[str, Any]]) -> dict[str, list[dict[str, str]]]:
    """pydantic/FastAPI validation errors, keyed by the attribute they are about."""
    details: dict[str, list[dict[str, str]]] = {}
    for error in errors:
        loc = [str(p) for p in error.get("loc", ()) if p not in ("path", "query", "body")]
        name = ".".join(loc) or "body"
        kind = _KINDS.get(str(error.get("type")), "invalid")
        details.setdefault(name, []).append(detail(kind, error.get("input", "")))
    return details


def error_body(messages: str | Sequence[str], details: Details | None = None) -> dict[str, object]:
    """The one error shape: `{"messages": [...], "details": {attribute: [...]}}`."""
    listed = [messages] if isinstance(messages, str) else list(messages)
    return {
        "messages": [printable(m) for m in listed],
        "details": {
            printable(name): [{k: printable(v) for k, v in item.items()} for item in items]
            for name, items in (details or {}).items()
        },
    }
